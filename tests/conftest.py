"""Shared fixtures: nnU-Net's folders in a temporary place and nnU-Net's real commands run on them."""
import os
import shutil
import subprocess
import sys

import pytest

from nnunet_cmcl.naming import trainer_path

HERE = os.path.dirname(os.path.abspath(__file__))
# test-only short variants live in tests/ext_trainers, found through nnUNet_extTrainer like the shipped ones
EXT_TRAINERS = os.pathsep.join([trainer_path(), os.path.join(HERE, "ext_trainers")])


# nnU-Net runs of dataset 501 that several modules share (the session fixtures below) take minutes each. The
# modules using any of them run on one pytest-xdist worker, so that they are trained once, not once per worker;
# every other module is a unit of its own, as --dist loadfile has it (scripts/run_tests.sh: --dist loadgroup).
# xdist's own loadgroup cannot do this with pytest 9: it writes the group into Item._nodeid, which pytest 9 no
# longer reads, so every test became a unit of its own and module fixtures were built on both workers.
SHARED_RUNS = {"pretrained", "baseline", "finetuned"}
SHARED_RUN_MODULES = {"test_bad_inputs.py", "test_handoff.py", "test_pretraining_e2e.py", "test_study.py"}


def pytest_collection_modifyitems(items):
    """Refuses a module that uses the shared runs but would run apart from the others (it would train them again)."""
    using = {os.path.basename(str(item.path)) for item in items if SHARED_RUNS & set(item.fixturenames)}
    if using - SHARED_RUN_MODULES:
        raise pytest.UsageError(f"{', '.join(sorted(using - SHARED_RUN_MODULES))} use(s) the shared runs "
                                f"{sorted(SHARED_RUNS)}: add to SHARED_RUN_MODULES in tests/conftest.py")


# optional: without xdist (`-p no:xdist`) the hook is unknown, and pytest would refuse the conftest
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunsScheduling(LoadScopeScheduling):
        """A test module is a unit of work, and the modules of the shared runs are one unit together."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "shared nnU-Net runs" if os.path.basename(module) in SHARED_RUN_MODULES else module

    return SharedRunsScheduling(config, log)


def nnunet_env(root: str) -> dict:
    """Environment for nnU-Net's commands with its three folders under ``root``, run small on the CPU."""
    paths = {name: os.path.join(root, name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    return {**os.environ, **paths, "nnUNet_extTrainer": EXT_TRAINERS, "nnUNet_n_proc_DA": "1",
            "nnUNet_def_n_proc": "1", "nnUNet_compile": "false", "OMP_NUM_THREADS": "2"}


def console_script(name: str) -> str:
    """The path of one of nnU-Net's (or our) console scripts: next to the running interpreter, else on PATH."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe is not None, f"{name} not found next to {sys.executable} or on PATH"
    return exe


def run(command: list[str], env: dict, timeout: int = 900, expect: int = 0) -> subprocess.CompletedProcess:
    """Runs one of nnU-Net's (or our) console scripts and checks its exit code (shows the output if it differs)."""
    proc = subprocess.run([console_script(command[0]), *command[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, f"{' '.join(command)} exited ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def plan_and_preprocess(dataset_id: int, env: dict, configurations: tuple[str, ...] = ("3d_fullres",),
                        planner: str | None = None) -> None:
    command = ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *configurations,
               "-np", "1", "-npfp", "1", "--no_pbar"]
    if planner:
        command += ["-pl", planner]
    run(command, env)


@pytest.fixture(scope="session")
def phantom_env(tmp_path_factory) -> dict:
    """A preprocessed 2-modality phantom dataset 501 (8 cases of 32^3): nnU-Net env to use it."""
    from nnunet_cmcl.data.synthetic import write_phantom_dataset

    env = nnunet_env(str(tmp_path_factory.mktemp("nnunet")))
    write_phantom_dataset(env["nnUNet_raw"], 501, num_cases=8, shape=(32, 32, 32), seed=0)
    plan_and_preprocess(501, env)
    return env


@pytest.fixture(scope="session")
def pretrained(phantom_env) -> str:
    """Fold folder of a short CMCL pretraining of dataset 501 through `nnUNetv2_train ... -tr nnUNetTrainerCMCL_test`."""
    proc = run(["nnUNetv2_train", "501", "3d_fullres", "all", "-tr", "nnUNetTrainerCMCL_test", "-device", "cpu"],
               phantom_env)
    assert "CMCL config:" in proc.stdout and "segmentation validation is skipped" in proc.stdout
    return os.path.join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom",
                        "nnUNetTrainerCMCL_test__nnUNetPlans__3d_fullres", "fold_all")


@pytest.fixture(scope="session")
def resenc_env(phantom_env) -> dict:
    """phantom_env with nnU-Net's ResEnc M plans (nnUNetResEncUNetMPlans) of dataset 501 preprocessed too."""
    plan_and_preprocess(501, phantom_env, ("3d_fullres",), planner="nnUNetPlannerResEncM")
    return phantom_env


@pytest.fixture(scope="session")
def finetuned(phantom_env, pretrained) -> str:
    """Fold 0 of 501 fine-tuned from the CMCL checkpoint with `-tr nnUNetTrainerCMCLFinetune_test`: its folder."""
    run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerCMCLFinetune_test", "-pretrained_weights",
         os.path.join(pretrained, "checkpoint_final.pth"), "-device", "cpu"], phantom_env)
    return os.path.join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom",
                        "nnUNetTrainerCMCLFinetune_test__nnUNetPlans__3d_fullres", "fold_0")


@pytest.fixture(scope="session")
def baseline(phantom_env) -> str:
    """Fold 0 of 501 trained from scratch with the same budget (`-tr nnUNetTrainer_test`): its folder."""
    run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainer_test", "-device", "cpu"], phantom_env)
    return os.path.join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom",
                        "nnUNetTrainer_test__nnUNetPlans__3d_fullres", "fold_0")


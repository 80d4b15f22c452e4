"""`nnunet-cmcl demo`: from nothing to a comparison on built-in data, on the CPU, resumable.

synthetic dataset -> nnUNetv2_plan_and_preprocess -> CMCL pretraining on fold 0's training images, no labels ->
fine-tuning and a vanilla baseline with identical budgets on a low label fraction -> compare.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from nnunet_cmcl.naming import dataset_name

DATASET_ID = 950


def plan_and_preprocess_once(dataset_id: int) -> bool:
    """nnUNetv2_plan_and_preprocess (3d_fullres, integrity check) unless its output exists; True if it ran."""
    folder = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name(dataset_id))
    if os.path.isfile(os.path.join(folder, "nnUNetPlans.json")) and os.path.isdir(
            os.path.join(folder, "nnUNetPlans_3d_fullres")):
        return False
    exe = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_plan_and_preprocess")
    subprocess.run([exe, "-d", str(dataset_id), "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar",
                    "--verify_dataset_integrity"], check=True, stdout=subprocess.DEVNULL)
    return True


def _step(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run_demo(workdir: str, kind: str = "brain", cases: int = 20, fraction: float = 0.25, seed: int = 0,
             device: str = "cpu") -> str:
    """Runs (or finishes) the demo in ``workdir``; returns the comparison folder."""
    start = time.time()
    workdir = os.path.abspath(workdir)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(workdir, name)
        os.makedirs(os.environ[name], exist_ok=True)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ.setdefault("nnUNet_compile", "false")

    # imported once the nnUNet_* variables are set: nnU-Net reads them when its modules are imported
    from nnunet_cmcl.data.synthetic import write_brain_dataset, write_phantom_dataset
    from nnunet_cmcl.study.experiment import execute
    from nnunet_cmcl.study.plan import Arm, plan_runs
    from nnunet_cmcl.study.report import compare_and_report, format_table

    raw = os.environ["nnUNet_raw"]
    existing = [d for d in os.listdir(raw) if d.startswith(f"Dataset{DATASET_ID}_")]
    if existing:
        _step(f"1/4 dataset {existing[0]} exists, kept")
    else:
        _step(f"1/4 writing the {kind} dataset ({cases} cases)")
        writer = write_brain_dataset if kind == "brain" else write_phantom_dataset
        writer(raw, DATASET_ID, num_cases=cases, seed=seed)
    name = dataset_name(DATASET_ID)
    _step("2/4 " + ("nnUNetv2_plan_and_preprocess" if plan_and_preprocess_once(DATASET_ID) else
                    "plans and preprocessed data exist, kept"))
    _step(f"3/4 pretraining on fold 0's training images, then fine-tuning and baseline with {fraction:g} of its "
          f"labels")
    runs = plan_runs(name, "3d_fullres", "nnUNetPlans", [0], [fraction], seed,
                     [Arm("baseline", "nnUNetTrainerVanilla_demo"),
                      Arm("CMCL", "nnUNetTrainerCMCLFinetune_demo", "nnUNetTrainerCMCL_demo")])
    execute(runs, str(DATASET_ID), "3d_fullres", "nnUNetPlans", device, os.path.join(workdir, "logs"))
    _step("4/4 compare")
    result, paths = compare_and_report(str(DATASET_ID), "3d_fullres", "nnUNetPlans", "nnUNetTrainerVanilla_demo",
                                       "nnUNetTrainerCMCLFinetune_demo", [runs[-1].fold])
    print(format_table(result))
    output = os.path.dirname(paths["md"])
    _step(f"done in {time.time() - start:.0f} s; report in {output}")
    return output

"""The study through nnU-Net's commands: seeded repeats, arms, per-fold pretraining, the report; and that a
training seed reproduces a run exactly on the CPU."""
import json
import os
import shutil

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import nnunet_env, plan_and_preprocess, run

BASELINE, PRETRAINER, FINETUNER = "nnUNetTrainerSeeded_smoke", "nnUNetTrainerCMCL_smoke", \
    "nnUNetTrainerCMCLFinetune_smoke"
DATASET = "Dataset502_StudyPhantom"


@pytest.fixture(scope="module")
def study_env(tmp_path_factory) -> dict:
    """A phantom of its own (dataset 502), so the folds this test adds leave other tests' splits alone; batches
    drawn in the main process (nnUNet_n_proc_DA=0), where a seed fixes everything."""
    from nnunet_cmcl.data.synthetic import write_phantom_dataset

    env = nnunet_env(str(tmp_path_factory.mktemp("study")))
    write_phantom_dataset(env["nnUNet_raw"], 502, name="StudyPhantom", num_cases=8, shape=(32, 32, 32), seed=3)
    plan_and_preprocess(502, env)  # nnU-Net's planner needs nnUNet_n_proc_DA >= 1
    return {**env, "nnUNet_n_proc_DA": "0", "nnUNet_CMCL_progress_interval": "2"}


@pytest.fixture(scope="module")
def experiment(study_env) -> str:
    return run(["nnunet-cmcl", "experiment", "-d", "502", "--labeled", "2", "--train-seeds", "0", "1", "--baseline",
                BASELINE, "--pretrainer", PRETRAINER, "--finetuner", FINETUNER, "-device", "cpu"], study_env).stdout


def _fold_folder(env: dict, trainer: str, fold: int) -> str:
    return join(env["nnUNet_results"], DATASET, f"{trainer}__nnUNetPlans__3d_fullres", f"fold_{fold}")


def test_experiment_repeats_every_run_per_seed_and_reports_against_the_baseline(study_env, experiment):
    splits = load_json(join(study_env["nnUNet_preprocessed"], DATASET, "splits_final.json"))
    n_train = len(splits[0]["train"])
    seeded = {(s.get("cmcl_seeded_from"), s["cmcl_train_seed"]): i for i, s in enumerate(splits)
              if "cmcl_train_seed" in s}
    regime = next(i for i, s in enumerate(splits) if s.get("cmcl_fraction") == 2 / n_train and "cmcl_train_seed" not in s)
    assert len(splits[regime]["train"]) == 2 and splits[regime]["val"] == splits[0]["val"]
    for seed in (0, 1):
        # pretraining on the source fold's training images only: its seeded repeat of fold 0
        pretraining = _fold_folder(study_env, PRETRAINER, seeded[(0, seed)])
        assert json.load(open(join(pretraining, "debug.json")))["train_seed"] == str(seed)
        assert "training seed" in open(next(join(pretraining, f) for f in os.listdir(pretraining)
                                            if f.startswith("training_log"))).read()
        for trainer in (BASELINE, FINETUNER):
            fold = _fold_folder(study_env, trainer, seeded[(regime, seed)])
            assert os.path.isfile(join(fold, "validation", "summary.json"))
            assert json.load(open(join(fold, "debug.json")))["train_seed"] == str(seed)
        source = json.load(open(join(_fold_folder(study_env, FINETUNER, seeded[(regime, seed)]), "debug.json")))
        assert f"fold_{seeded[(0, seed)]}" in source["pretrained_source"]
    assert "[experiment 6/6]" in experiment and "epoch" in experiment
    report = join(study_env["nnUNet_results"], DATASET, "cmcl_studies", "experiment__nnUNetPlans__3d_fullres")
    table = open(join(report, "study.md")).read()
    assert "A/A" in table and "CMCL" in table and "structure_a" in table
    result = json.load(open(join(report, "study.json")))
    mean_cmcl = next(r for r in result["rows"] if r["class"] == "mean" and r["arm"] == "CMCL")
    assert mean_cmcl["n_labeled"] == 2 and {d["seed"] for d in mean_cmcl["seed_diffs"]} == {0, 1}
    for name in ("dice_vs_labels.png", "learning_curves.png"):
        with open(join(report, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    again = run(["nnunet-cmcl", "experiment", "-d", "502", "--labeled", "2", "--train-seeds", "0", "1", "--baseline",
                 BASELINE, "--pretrainer", PRETRAINER, "--finetuner", FINETUNER, "-device", "cpu"], study_env).stdout
    assert again.count("finished earlier, skipped") == 6


def test_the_same_seed_reproduces_a_run_exactly_and_another_seed_does_not(study_env, experiment, tmp_path):
    splits = load_json(join(study_env["nnUNet_preprocessed"], DATASET, "splits_final.json"))
    folds = {s["cmcl_train_seed"]: i for i, s in enumerate(splits)
             if "cmcl_train_seed" in s and "cmcl_fraction" in s}
    first = _fold_folder(study_env, BASELINE, folds[0])
    # the same fold again, into other results: nnU-Net's command, nothing shared but the data and the seed
    env = {**study_env, "nnUNet_results": str(tmp_path)}
    run(["nnUNetv2_train", "502", "3d_fullres", str(folds[0]), "-tr", BASELINE, "-device", "cpu"], env)
    second = join(str(tmp_path), DATASET, f"{BASELINE}__nnUNetPlans__3d_fullres", f"fold_{folds[0]}")

    def weights(folder):
        return torch.load(join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)[
            "network_weights"]

    a, b, other = weights(first), weights(second), weights(_fold_folder(study_env, BASELINE, folds[1]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)
    dice = [[c["metrics"] for c in load_json(join(f, "validation", "summary.json"))["metric_per_case"]]
            for f in (first, second)]
    assert dice[0] == dice[1]


def test_baseline_without_seed_support_is_refused_before_any_run(study_env):
    proc = run(["nnunet-cmcl", "experiment", "-d", "502", "--train-seeds", "0", "--baseline", "nnUNetTrainer_5epochs",
                "--pretrainer", PRETRAINER, "--finetuner", FINETUNER, "-device", "cpu"], study_env, expect=2)
    assert "does not read training seeds" in proc.stderr and "Traceback" not in proc.stderr

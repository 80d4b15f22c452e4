"""An arm can train at some of the study's label regimes only (Arm.labeled): the runs the study plans."""
import json
import os

import pytest

import nnunet_cmcl.study.plan as plan
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.study.plan import Arm, plan_runs

NAME = "Dataset999_Regimes"
ARMS = [Arm("nnU-Net", "nnUNetTrainerSeeded"),
        Arm("CMCL", "nnUNetTrainerCMCLFinetune", "nnUNetTrainerCMCL"),
        Arm("CMCL + dropout", "nnUNetTrainerCMCLFinetune_modalityDropout", "nnUNetTrainerCMCL", "nnU-Net",
            labeled=(8,))]


@pytest.fixture
def study(tmp_path, monkeypatch):
    folder = tmp_path / "preprocessed" / NAME
    folder.mkdir(parents=True)
    ids = [f"case_{i:02d}" for i in range(12)]
    (folder / "splits_final.json").write_text(json.dumps([{"train": ids[:8], "val": ids[8:]}]))
    monkeypatch.setattr(plan, "nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(plan, "nnUNet_results", str(tmp_path / "results"))


def test_an_arm_with_its_own_regimes_trains_at_those_only_and_its_pretraining_runs_once(study):
    runs = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS, [0, 1], labels_per_seed=True)
    segmentation = {(r.arm, r.n_labeled, r.seed) for r in runs if r.kind == "segmentation"}
    assert segmentation == {(a, n, s) for a in ("nnU-Net", "CMCL") for n in (2, 8) for s in (0, 1)} | {
        ("CMCL + dropout", 8, s) for s in (0, 1)}
    assert [r.trainer for r in runs if r.kind == "pretraining"] == ["nnUNetTrainerCMCL"] * 2  # one per seed


def test_a_regime_the_study_does_not_train_is_refused(study):
    arms = ARMS[:2] + [Arm("CMCL + dropout", "nnUNetTrainerCMCLFinetune_modalityDropout", labeled=(4,))]
    with pytest.raises(CMCLInputError, match=r"label regimes \[4\]"):
        plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, arms, [0, 1], labels_per_seed=True)


def test_the_arms_from_random_weights_come_first_and_each_pretraining_right_before_its_runs(study):
    runs = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS, [0, 1], labels_per_seed=True)
    for seed in (0, 1):
        order = [(r.kind, r.arm, r.n_labeled) for r in runs if r.seed == seed or (r.kind == "pretraining" and
                                                                                   f"seed {seed}" in r.label)]
        assert order == [("segmentation", "nnU-Net", 2), ("segmentation", "nnU-Net", 8), ("pretraining", None, None),
                         ("segmentation", "CMCL", 2), ("segmentation", "CMCL", 8), ("segmentation", "CMCL + dropout", 8)]
    pretraining = runs[2]
    assert all(r.pretrained == pretraining.done_file for r in runs[3:6])


def test_a_pretraining_trains_only_while_a_run_starting_from_it_is_unfinished(study, tmp_path):
    from nnunet_cmcl.study.experiment import to_train

    runs = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS, [0], labels_per_seed=True)
    pretraining, dependents = runs[2], runs[3:6]
    assert to_train(pretraining, runs)
    for run in dependents[:-1]:  # as restored from a study's ledger: finished, without the pretraining
        os.makedirs(os.path.dirname(run.done_file))
        open(run.done_file, "w").close()
    assert to_train(pretraining, runs) and not to_train(dependents[0], runs)
    os.makedirs(os.path.dirname(dependents[-1].done_file))
    open(dependents[-1].done_file, "w").close()
    assert not to_train(pretraining, runs)

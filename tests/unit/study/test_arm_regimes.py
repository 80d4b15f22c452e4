"""An arm can train at some of the study's label regimes only (Arm.labeled): the runs the study plans."""
import json

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

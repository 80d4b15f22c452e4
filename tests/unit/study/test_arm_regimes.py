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


def test_arms_planned_again_beside_others_share_their_runs_and_the_splits(study, tmp_path):
    """As `study --preset cpu-defaults` plans beside `--preset cpu`: the arms both hold are the same runs (fold
    folders), the shared pretraining too, and the second planning adds no fold to the splits."""
    first = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS, [0, 1], labels_per_seed=True)
    splits = (tmp_path / "preprocessed" / NAME / "splits_final.json").read_text()
    alternative = Arm("CMCL, warm-up", "nnUNetTrainerCMCLFinetune_warmup", "nnUNetTrainerCMCL", "CMCL",
                      labeled=(8,))
    second = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS[:2] + [alternative], [0, 1],
                       labels_per_seed=True)
    assert (tmp_path / "preprocessed" / NAME / "splits_final.json").read_text() == splits
    shared = {(r.label, r.fold_folder) for r in first if r.arm in ("nnU-Net", "CMCL") or r.kind == "pretraining"}
    assert shared == {(r.label, r.fold_folder) for r in second if r.arm != alternative.label}
    cmcl = {(r.n_labeled, r.seed): r for r in second if r.arm == "CMCL"}
    for run in (r for r in second if r.arm == alternative.label):  # same fold and checkpoint as the default's
        assert (run.fold, run.pretrained) == (cmcl[(8, run.seed)].fold, cmcl[(8, run.seed)].pretrained)


def test_the_runs_validated_without_modalities_are_the_all_labels_runs_of_the_seeds_and_arms_given(study):
    from nnunet_cmcl.study.experiment import missing_runs, pairs_among

    runs = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS, [0, 1], labels_per_seed=True)
    assert {(r.arm, r.seed) for r in missing_runs(runs, [0])} == {(a.label, 0) for a in ARMS}
    assert {r.n_labeled for r in missing_runs(runs, None)} == {8}
    chosen = missing_runs(runs, None, ("nnU-Net", "CMCL + dropout"))
    assert {(r.arm, r.seed) for r in chosen} == {(a, s) for a in ("nnU-Net", "CMCL + dropout") for s in (0, 1)}
    # the report pairs an arm with its control there only where both were validated
    controls = {"CMCL + dropout": "nnU-Net", "CMCL": "nnU-Net + dropout"}
    assert pairs_among(controls, {r.arm for r in chosen}) == {"CMCL + dropout": "nnU-Net"}


def test_each_seed_names_its_own_labeled_subset_and_all_labels_are_one(study, tmp_path, monkeypatch):
    import nnunet_cmcl.study.experiment as experiment

    monkeypatch.setattr(experiment, "nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    runs = plan_runs(NAME, "2d", "nnUNetPlans", [0], [0.25, 1.0], 0, ARMS[:1], [0, 1], labels_per_seed=True)
    records = experiment.with_labeled_subsets([r.record() for r in runs], NAME)
    labeled = {(r["n_labeled"], r["seed"]): r["labeled"].split() for r in records}
    assert len(labeled[2, 0]) == 2 and labeled[2, 0] != labeled[2, 1]  # the A/A would pair subsets here
    assert labeled[8, 0] == labeled[8, 1] == [f"case_{i:02d}" for i in range(8)]

"""The built-in presets are consistent before any run: trainers nnU-Net finds, controls that are arms, the data's
channels, a pool at least 4x the labeled training set, each preset's own dataset ids."""
import pytest

from nnunet_cmcl.data.brats import CHANNELS as BRATS_CHANNELS
from nnunet_cmcl.naming import find_trainer_class
from nnunet_cmcl.study.preset import DATA, PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_arms_are_trainers_nnunet_finds_and_controls_are_arms(name):
    preset = PRESETS[name]
    labels = [a.label for a in preset.arms]
    assert len(set(labels)) == len(labels)
    for arm in preset.arms:
        for trainer in filter(None, (arm.trainer, arm.pretrainer)):
            cls = find_trainer_class(trainer)
            assert cls is not None, trainer
            assert getattr(cls, "reads_train_seed", False) or arm.pretrainer == trainer, trainer
        assert arm.control is None or arm.control in labels
        assert set(arm.labeled) <= set(preset.labeled)  # plan_runs refuses others only after writing splits
    assert preset.data in DATA and max(preset.labeled) == preset.train_cases


def test_the_cpu_preset_runs_on_the_brats_data_with_every_arm_the_issue_names():
    preset = PRESETS["cpu"]
    assert preset.modalities == BRATS_CHANNELS and preset.labels_per_seed and preset.absent == ("all",)
    assert preset.pool_cases >= 4 * preset.train_cases and preset.val_cases >= 24 and len(preset.train_seeds) == 3
    assert len(preset.labeled) == 3
    trainers = {a.label: a.trainer for a in preset.arms}
    assert {"nnU-Net", "CMCL", "reconstruction", "CMCL + reconstruction", "nnU-Net + dropout",
            "CMCL + dropout"} == set(trainers)
    # one budget for every segmentation arm: each arm's difference to nnU-Net is its weights' or its dropout's
    budgets = {name: find_trainer_class(t).overrides for name, t in trainers.items()}
    assert len({str(sorted(b.items())) for b in budgets.values()}) == 1


def test_presets_have_their_own_datasets():
    ids = [i for p in PRESETS.values() for i in (p.dataset_id, p.pool_id)]
    assert len(set(ids)) == len(ids)


def test_the_demo_names_the_preset_that_studies_its_data():
    from nnunet_cmcl.study.demo import study_of

    assert study_of("brats") == "cpu" and study_of("brain") == "tissue"
    assert study_of("phantom") == "cpu"  # no preset runs on the phantom: the CPU preset is named


def test_the_command_line_offers_every_preset_and_gpu():
    """The CLI names the presets itself (its help loads no nnU-Net), so it is checked against PRESETS here."""
    from nnunet_cmcl.cli import build_parser

    study = build_parser()._subparsers._group_actions[0].choices["study"]
    preset = next(a for a in study._actions if a.dest == "preset")
    assert set(preset.choices) == set(PRESETS) | {"gpu"}


def test_a_partial_report_leaves_out_arms_without_runs_and_controls_without_runs():
    from types import SimpleNamespace

    from nnunet_cmcl.study.preset import arms_with_runs

    arms = list(PRESETS["cpu"].arms)  # the dropout arms train at all labels only
    runs = [SimpleNamespace(arm=a.label) for a in arms if not a.labeled or 2 in a.labeled]
    kept = arms_with_runs(arms, runs)
    assert [a.label for a in kept] == ["nnU-Net", "CMCL", "reconstruction", "CMCL + reconstruction"]
    control = next(a for a in arms if a.control)
    assert arms_with_runs(arms, runs + [SimpleNamespace(arm=control.label)])[-1].control is None
    assert arms_with_runs(arms, [SimpleNamespace(arm=a.label) for a in arms]) == arms

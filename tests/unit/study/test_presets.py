"""The built-in presets are consistent before any run: trainers nnU-Net finds, controls that are arms, the data's
channels, a pool at least 4x the labeled training set, each preset's own dataset ids."""
import dataclasses
import inspect

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


def test_presets_have_their_own_datasets_or_share_one_study_whole():
    """cpu-defaults runs in the cpu preset's workdir: same data, folds, seeds and budgets, so the runs of the arms
    both hold are one run. Any other pair of presets has datasets of its own."""
    from dataclasses import asdict

    def data(preset):
        what_it_runs = ("name", "arms", "missing_arms", "decides_defaults")
        return {k: v for k, v in asdict(preset).items() if k not in what_it_runs}

    for a in PRESETS.values():
        for b in PRESETS.values():
            if a is not b and {a.dataset_id, a.pool_id} & {b.dataset_id, b.pool_id}:
                assert data(a) == data(b), (a.name, b.name)
                shared = {x.label for x in a.arms} & {x.label for x in b.arms}
                assert {x for x in a.arms if x.label in shared} == {x for x in b.arms if x.label in shared}
    assert PRESETS["cpu-defaults"].dataset_id == PRESETS["cpu"].dataset_id
    assert PRESETS["tissue"].dataset_id not in (PRESETS["cpu"].dataset_id, PRESETS["cpu"].pool_id)


def _class_settings(trainer):
    """Every setting a trainer class holds: its public non-method attributes through the whole class hierarchy, a
    dataclass (cmcl_config) field by field, and its overrides (applied over the class attributes when it is made)."""
    found = {}
    for name in dir(trainer):
        value = inspect.getattr_static(trainer, name)
        if name.startswith("_") or name == "overrides" or callable(value) \
                or isinstance(value, (property, staticmethod, classmethod)):
            continue
        if dataclasses.is_dataclass(value):
            found.update({f"{name}.{k}": v for k, v in dataclasses.asdict(value).items()})
        else:
            found[name] = value
    found.update(trainer.overrides)
    return found


def _changed(arm, arms):
    """What an arm's trainers set otherwise than those of the arm it is paired with: {setting: (its, arm's)}."""
    def settings(a):
        found = _class_settings(find_trainer_class(a.trainer))
        if a.pretrainer:
            found.update({f"pre.{k}": v for k, v in _class_settings(find_trainer_class(a.pretrainer)).items()})
        return found

    base, alt = settings(arms[arm.control]), settings(arm)
    return {k: (base.get(k), alt.get(k)) for k in set(base) | set(alt) if base.get(k) != alt.get(k)}


def test_the_defaults_preset_pairs_each_alternative_with_the_default_it_would_replace():
    """docs/method.md's rule: the global term, the dense stages, the full view, the fine-tuning warm-up and the
    dropout probability, each changed alone against its default, with the same budgets."""
    preset, cpu = PRESETS["cpu-defaults"], PRESETS["cpu"]
    arms = {a.label: a for a in preset.arms}
    assert preset.arms[0] == cpu.arms[0] and arms["CMCL"] in cpu.arms and arms["nnU-Net + dropout"] in cpu.arms
    changes = {a.label: _changed(a, arms) for a in preset.arms if a.control}
    assert changes == {
        "CMCL + global term": {"pre.cmcl_config.weight_global": (0.0, 1.0)},
        "CMCL, bottleneck only": {"pre.cmcl_config.dense_stages": (2, 0)},
        "CMCL, no full view": {"pre.cmcl_config.add_full_view": (True, False)},
        "CMCL, warm-up": {"warmup_fraction": (0.0, 0.05)},
        "nnU-Net + dropout 0.25": {"modality_dropout_probability": (0.1, 0.25)}}
    # the pretraining alternatives fine-tune with their own trainer (results folder), the warm-up from CMCL's
    # checkpoint; each at the fewest labels and all; the dropout probability where the absent modalities are
    assert arms["CMCL, warm-up"].pretrainer == arms["CMCL"].pretrainer
    assert len({a.trainer for a in preset.arms}) == len(preset.arms)
    assert {a.labeled for a in preset.arms if a.control} == {(2, 16), (16,)}
    assert preset.missing_arms[0] == preset.arms[0].label
    assert set(preset.missing_arms) == {"nnU-Net", "nnU-Net + dropout", "nnU-Net + dropout 0.25"}


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

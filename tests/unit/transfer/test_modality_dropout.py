"""Modality dropout: the draws, the zeroed channels, the probability, the seed, and the trainers' settings."""
import pytest
import torch

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.missing import modality_channels
from nnunet_cmcl.host_syncs import HostSyncCounter
from nnunet_cmcl.overrides import apply_overrides
from nnunet_cmcl.pretraining.views import modality_groups
from nnunet_cmcl.run_settings import trainer_settings
from nnunet_cmcl.transfer.modality_dropout import (ModalityDropout, channel_modality_index, check_dropout_modalities,
                                                   draw_dropped_modalities, drop_modalities, dropout_seed,
                                                   nnUNetTrainerCMCLFinetune_modalityDropout,
                                                   nnUNetTrainerSeeded_modalityDropout)

# channels 1 and 3 share a name: one modality of two channels
CHANNELS = {"0": "T1", "1": "T2", "2": "FLAIR", "3": "T2"}


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_a_dropped_sample_loses_a_proper_non_empty_subset_and_every_one_is_drawn(k):
    dropped = draw_dropped_modalities(4000, k, 1.0, _generator())
    counts = dropped.sum(dim=1)
    assert ((counts >= 1) & (counts <= k - 1)).all()  # never none, never all
    drawn = {tuple(row.tolist()) for row in dropped}
    assert len(drawn) == 2 ** k - 2


def test_dropped_channels_are_exactly_zero_and_the_others_untouched():
    groups = modality_groups(CHANNELS)
    assert groups == [[0], [1, 3], [2]]
    data = torch.randn(64, 4, 5, 6, 7) - 0.5  # negative values too: +0.0, not -0.0, where dropped
    out, hit = drop_modalities(data, channel_modality_index(groups, 4), 3, 1.0, _generator(1))
    assert hit.all()
    for b in range(64):
        zero = [c for c in range(4) if (out[b, c] == 0).all()]
        assert zero and len(zero) < 4
        assert (1 in zero) == (3 in zero)  # the two channels of T2 go together
        for c in range(4):
            if c in zero:
                assert not torch.signbit(out[b, c]).any()
            else:
                assert torch.equal(out[b, c], data[b, c])


def test_a_cascade_channel_after_the_images_is_never_dropped():
    groups = [[0], [1]]
    index = channel_modality_index(groups, 3)
    assert index.tolist() == [0, 1, 2]
    out, _ = drop_modalities(torch.ones(200, 3, 4, 4), index, 2, 1.0, _generator())
    assert (out[:, 2] == 1).all() and (out[:, :2].sum(dim=(1, 2, 3)) == 16).all()  # exactly one image channel left


def test_probability_zero_changes_nothing_and_draws_nothing():
    data = torch.randn(8, 3, 4, 4, 4)
    generator = _generator(5)
    state = generator.get_state()
    out, hit = drop_modalities(data, channel_modality_index([[0], [1], [2]], 3), 3, 0.0, generator)
    assert out is data and not hit.any()
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_the_probability_is_respected(p):
    hit = draw_dropped_modalities(20000, 3, p, _generator(2)).any(dim=1).float().mean().item()
    assert abs(hit - p) < 0.02  # 4.5 binomial standard deviations at p = 0.5


def test_the_same_seed_draws_the_same_and_another_seed_does_not():
    def masks(seed):
        return draw_dropped_modalities(256, 4, 0.5, _generator(seed))
    assert torch.equal(masks(3), masks(3)) and not torch.equal(masks(3), masks(4))
    assert dropout_seed(7, 0) == dropout_seed(7, 0) != dropout_seed(7, 1) != dropout_seed(8, 0)
    assert 0 <= dropout_seed(7, 0) < 2 ** 63 and dropout_seed(None, 0) != dropout_seed(None, 0)


def test_one_modality_and_a_bad_probability_are_refused_in_one_line():
    with pytest.raises(CMCLInputError, match="needs at least 2 modalities") as e:
        check_dropout_modalities(modality_groups({"0": "CT"}), 0.5, "nnUNetTrainerSeeded_modalityDropout")
    assert "\n" not in str(e.value)
    with pytest.raises(CMCLInputError, match="is not a number in"):
        check_dropout_modalities([[0], [1]], 1.5, "T")
    with pytest.raises(CMCLInputError, match="2 modalities"):  # two channels of one name are one modality
        check_dropout_modalities(modality_groups({"0": "CT", "1": "CT"}), 0.5, "T")


def test_the_probability_is_a_recorded_setting_that_overrides_set():
    for cls in (nnUNetTrainerSeeded_modalityDropout, nnUNetTrainerCMCLFinetune_modalityDropout):
        assert issubclass(cls, ModalityDropout) and cls.__mro__[1] is ModalityDropout
        assert trainer_settings(cls)["settings"]["modality_dropout_probability"] == 0.1  # the measured default (docs/missing_modalities.md)

    class Variant(nnUNetTrainerSeeded_modalityDropout):
        overrides = {"modality_dropout_probability": 0.25}

    assert trainer_settings(Variant)["settings"]["overrides"] == {"modality_dropout_probability": 0.25}
    trainer = object.__new__(Variant)  # apply_overrides checks the key against the trainer's attributes
    apply_overrides(trainer, Variant.overrides)
    assert trainer.modality_dropout_probability == 0.25


def test_evaluation_groups_channels_as_the_views_do():
    # evaluation may not import pretraining: its grouping of channels is its own and must stay the views' one
    for names in (CHANNELS, {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}, {"0": "CT"}):
        assert list(modality_channels(names).values()) == modality_groups(names)


class _RecordingStep:
    def train_step(self, batch):  # stands in for nnU-Net's step: returns what it was given
        return batch


class _Trainer(ModalityDropout, _RecordingStep):
    pass


def test_the_training_step_drops_on_the_device_without_a_host_sync():
    trainer = object.__new__(_Trainer)  # the state on_train_start sets, without a whole nnU-Net trainer
    groups = modality_groups(CHANNELS)
    vars(trainer).update(device=torch.device("cpu"), dropout_modalities=groups, modality_dropout_probability=1.0,
                         _dropout_generator=_generator(9), _channel_modality=channel_modality_index(groups, 4),
                         _dropout_counts=torch.zeros(2, dtype=torch.long))
    batch = {"data": torch.randn(6, 4, 8, 8, 8), "target": "untouched", "keys": ["a"] * 6}
    with HostSyncCounter() as counter:
        seen = trainer.train_step(batch)
    assert counter.total == 0 and counter.from_python_data == 0
    assert seen["target"] == "untouched" and seen["data"] is not batch["data"]
    zeroed = (seen["data"] == 0).flatten(2).all(dim=2)
    assert zeroed.any(dim=1).all() and not zeroed.all(dim=1).any()
    assert trainer._dropout_counts.tolist() == [6, 6]

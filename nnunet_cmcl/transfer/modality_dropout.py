"""Modality dropout at fine-tuning: segmentation trained to survive a missing modality.

Per training sample, with probability ``modality_dropout_probability``, a uniformly drawn proper non-empty subset
of the modalities is removed (never all of them, never none): its channels are set to 0 in the augmented batch,
right before the network. That is exactly how a missing modality looks at inference (``evaluate-missing``,
``predict --present``): 0 after nnU-Net's normalisation, the mean after its z-score. A modality is a channel-name
group of dataset.json (``pretraining.views.modality_groups``: channels of one name are one modality).

The draws run on the training device with a generator of their own (seeded from the fold's training seed and the
rank), so no extra I/O, no host sync per step, no draw taken from the streams nnU-Net's augmentation uses, and a
probability of 0 trains bit for bit what the trainer without the mixin trains. A run resumed with ``--c``
restarts the stream from its seed (as ``seeding`` says of every random state). Validation is untouched: nnU-Net's
pseudo Dice and final validation see every modality.

- ``nnUNetTrainerCMCLFinetune_modalityDropout``: fine-tuning from a CMCL checkpoint with the dropout;
- ``nnUNetTrainerSeeded_modalityDropout``: nnU-Net's trainer with the fold's seed and the same dropout, its
  schedule-matched control (the fine-tuning trainer's default schedule is nnU-Net's).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.views import modality_groups
from nnunet_cmcl.seeding import nnUNetTrainerSeeded
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune

# the generator's stream is apart from the seeds seeding.py hands out (numpy's SeedSequence mixes the tag in)
_STREAM_TAG = 0x6D6F6464  # "modd"


def check_dropout_modalities(groups: list[list[int]], probability: float, trainer: str) -> None:
    """Refuses a probability outside [0, 1] and a dataset with one modality (nothing could be dropped)."""
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise CMCLInputError(f"{trainer}: modality_dropout_probability {probability!r} is not a number in [0, 1]; "
                             f"set it in the trainer's overrides, e.g. {{'modality_dropout_probability': 0.5}}")
    if len(groups) < 2:
        raise CMCLInputError(f"{trainer} needs at least 2 modalities to drop one, the dataset has {len(groups)} "
                             f"(channels {groups}); give each modality its own name in dataset.json channel_names, "
                             f"or train nnUNetTrainerSeeded / nnUNetTrainerCMCLFinetune")


def channel_modality_index(groups: list[list[int]], num_channels: int) -> torch.Tensor:
    """(C,) long: the modality of each input channel, ``len(groups)`` for a channel of none (a cascade's
    one-hot segmentation of the previous stage comes after the image channels and is never dropped)."""
    index = torch.full((num_channels,), len(groups), dtype=torch.long)
    for k, channels in enumerate(groups):
        index[channels] = k
    return index


def draw_dropped_modalities(batch_size: int, num_modalities: int, probability: float,
                            generator: torch.Generator) -> torch.Tensor:
    """(B, K) bool on the generator's device: per sample, with ``probability``, a uniformly drawn proper
    non-empty subset of the K modalities (one of 2^K - 2), else none. Drawn on the device: no host sync."""
    device = generator.device
    hit = torch.rand(batch_size, generator=generator, device=device) < probability
    # a subset as the bits of a code in 1 .. 2^K - 2: 0 (none) and 2^K - 1 (all) are never drawn
    code = torch.randint(1, 2 ** num_modalities - 1, (batch_size,), generator=generator, device=device)
    bits = (code[:, None] >> torch.arange(num_modalities, device=device)) & 1
    return bits.bool() & hit[:, None]


def drop_modalities(data: torch.Tensor, channel_modality: torch.Tensor, num_modalities: int, probability: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(data with the dropped modalities' channels set to exactly 0, (B,) bool: the samples that lost a subset).
    ``probability`` 0 draws nothing and returns ``data`` itself: the generator is not advanced."""
    if probability <= 0:
        return data, torch.zeros(data.shape[0], dtype=torch.bool, device=data.device)
    dropped = draw_dropped_modalities(data.shape[0], num_modalities, probability, generator)
    none = torch.zeros(data.shape[0], 1, dtype=torch.bool, device=dropped.device)
    per_channel = torch.cat([dropped, none], dim=1)[:, channel_modality.to(dropped.device)]  # (B, C)
    # masked_fill writes +0.0 (a product with 0 would leave -0.0 for negative intensities)
    mask = per_channel.reshape(*per_channel.shape, *([1] * (data.ndim - 2)))
    return data.masked_fill(mask, 0), dropped.any(dim=1)


def dropout_seed(train_seed: int | None, rank: int) -> int:
    """The generator's seed: from the fold's training seed and the rank, or from OS entropy for an unseeded fold
    (torch's default seed is the same in every process: an unseeded run would repeat its draws)."""
    if train_seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    return int(np.random.SeedSequence([int(train_seed), int(rank), _STREAM_TAG]).generate_state(2, np.uint64)[0] >> 1)


class ModalityDropout:
    """Mixin for the package's segmentation trainers (before the trainer among the bases): modality dropout in
    the training step (see the module docstring). The probability is a class attribute, so ``cmcl_settings.json``
    records it and ``experiment`` refuses a run trained with another one; a variant sets it in ``overrides``."""

    # the probability per sample, chosen by measurement (docs/missing_modalities.md, "Choosing the probability"):
    # of 0.1, 0.25 and 0.5, the one with the best Dice over the absent subsets among those that cost at most 0.01
    # Dice with every modality present (0.1 cost 0.0055, 0.25 cost 0.0118, on the CPU preset's all-labels runs)
    modality_dropout_probability = 0.1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)  # applies the overrides
        self.dropout_modalities = modality_groups(dataset_json["channel_names"])
        # before any work: nnUNetv2_train stops here, with the one line, before planning or loading anything
        check_dropout_modalities(self.dropout_modalities, self.modality_dropout_probability, type(self).__name__)

    def on_train_start(self):
        super().on_train_start()
        seed = dropout_seed(getattr(self, "train_seed", None), self.local_rank)
        self._dropout_generator = torch.Generator(device=self.device).manual_seed(seed)
        self._channel_modality = channel_modality_index(self.dropout_modalities, self.num_input_channels).to(
            self.device)
        self._dropout_counts = torch.zeros(2, dtype=torch.long, device=self.device)  # samples seen, samples dropped
        names = self.dataset_json["channel_names"]
        modalities = ", ".join(f"{names[str(g[0])]} (channel{'s' if len(g) > 1 else ''} {', '.join(map(str, g))})"
                               for g in self.dropout_modalities)
        k = len(self.dropout_modalities)
        self.print_to_log_file(
            f"modality dropout: probability {self.modality_dropout_probability} per training sample; modalities "
            f"{modalities}; a dropped sample loses one of the {2 ** k - 2} proper non-empty subsets, drawn uniformly, "
            f"its channels set to 0 after normalisation; validation sees every modality", also_print_to_console=True)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)  # nnU-Net's own .to() is then a no-op
        data, dropped = drop_modalities(data, self._channel_modality, len(self.dropout_modalities),
                                        self.modality_dropout_probability, self._dropout_generator)
        self._dropout_counts[0] += dropped.numel()  # on the device: read once an epoch
        self._dropout_counts[1] += dropped.sum()
        return super().train_step({**batch, "data": data})

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        seen, dropped = self._dropout_counts.tolist()  # one host sync an epoch
        self._dropout_counts.zero_()
        self.print_to_log_file(f"modality dropout this epoch: {dropped} of {seen} training samples lost a subset "
                               f"of their modalities (this rank)", also_print_to_console=False)


class nnUNetTrainerCMCLFinetune_modalityDropout(ModalityDropout, nnUNetTrainerCMCLFinetune):
    """Fine-tuning from a CMCL checkpoint with modality dropout: ``nnUNetv2_train D C F -tr
    nnUNetTrainerCMCLFinetune_modalityDropout -pretrained_weights CKPT``."""


class nnUNetTrainerSeeded_modalityDropout(ModalityDropout, nnUNetTrainerSeeded):
    """nnU-Net's trainer with the fold's seed and the same modality dropout: the schedule-matched control of
    nnUNetTrainerCMCLFinetune_modalityDropout."""

"""The CPU presets' trainers: the shipped trainers with budgets sized for 2 cores (a segmentation run of the
tissue preset about 5 minutes, of the BraTS-like one about 18; the measurements are in docs/study.md). Every segmentation arm gets the same budget and nnU-Net's schedule,
every pretraining the same budget. Names: the shipped trainer's name plus ``_cpuPreset``; a fine-tuning trainer
says where its checkpoint comes from (``_fromRecon``), the default CMCL's has no ``_from``. Shims in
trainers/budgets/."""
from __future__ import annotations

import torch

from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE, nnUNetTrainerCMCL_DAE_global, nnUNetTrainerCMCL_recon
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.pretraining.variants import (nnUNetTrainerCMCL_bottleneck, nnUNetTrainerCMCL_global,
                                               nnUNetTrainerCMCL_noFull)
from nnunet_cmcl.seeding import nnUNetTrainerSeeded
from nnunet_cmcl.study.unmirrored import UnmirroredFinalValidation
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune
from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_warmup
from nnunet_cmcl.transfer.modality_dropout import (nnUNetTrainerCMCLFinetune_modalityDropout,
                                                   nnUNetTrainerSeeded_modalityDropout)

# 1000 iterations of batch 8: the baseline's EMA pseudo Dice moved 0.008 over the last fifth in the sizing run
# (docs/study.md); 2 validation batches an epoch, because 8 slices made the pseudo Dice jitter by about 0.01
SEGMENTATION_BUDGET = {"num_epochs": 200, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 2}
# the BraTS-like data's budget (docs/brats.md): 4,000 iterations, since doubling the learning curve's 2,000 added
# 0.037 mean Dice at 16 labeled cases and 0.029 at 2 (seed 0); 4 validation batches an epoch against the EMA's jitter
BRATS_SEGMENTATION_BUDGET = {"num_epochs": 400, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 4}
PRETRAINING_BUDGET = {"num_epochs": 60, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 1}
# the BraTS-like preset pretrains as many iterations as a segmentation run trains, as the GPU preset does (1000
# epochs each): 300 against 4,000 would measure a token pretraining; fixed before any pretrained arm ran on it
BRATS_PRETRAINING_BUDGET = {"num_epochs": 400, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 1}
# many short epochs, so nnU-Net's EMA pseudo Dice (smoothing factor 0.9 per epoch) catches up with the curve by
# the last fifth; progress.png every 10 epochs, because plotting it costs more than a 5-iteration epoch here
PLOT_EVERY = 10


class _CPUPresetSegmentation(UnmirroredFinalValidation):
    """Mixin for the preset's segmentation trainers, the same for every arm: the final validation unmirrored, and
    nnU-Net's progress.png every PLOT_EVERY epochs and after the last one. Logging is otherwise nnU-Net's."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        plot = self.logger.plot_progress_png

        def every_few_epochs(output_folder: str) -> None:
            if (self.current_epoch + 1) % PLOT_EVERY == 0 or self.current_epoch + 1 == self.num_epochs:
                plot(output_folder)

        self.logger.plot_progress_png = every_few_epochs


class nnUNetTrainerSeeded_cpuPreset(_CPUPresetSegmentation, nnUNetTrainerSeeded):
    """nnU-Net's default trainer (seeded) with the preset's segmentation budget: the baseline arm, and every
    pretrained arm's schedule-matched control (the fine-tuning trainer's default schedule is nnU-Net's)."""
    overrides = SEGMENTATION_BUDGET


class nnUNetTrainerCMCLFinetune_cpuPreset(_CPUPresetSegmentation, nnUNetTrainerCMCLFinetune):
    """Fine-tuning with its default schedule (nnU-Net's) and the preset's segmentation budget, from the default
    CMCL (nnUNetTrainerCMCL_cpuPreset)."""
    overrides = SEGMENTATION_BUDGET


class nnUNetTrainerCMCLFinetune_fromGlobal_cpuPreset(nnUNetTrainerCMCLFinetune_cpuPreset):
    """The same from CMCL with the global term (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromRecon_cpuPreset(nnUNetTrainerCMCLFinetune_cpuPreset):
    """The same from reconstruction-only pretraining (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromDAE_cpuPreset(nnUNetTrainerCMCLFinetune_cpuPreset):
    """The same from the default CMCL + reconstruction (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromDAEglobal_cpuPreset(nnUNetTrainerCMCLFinetune_cpuPreset):
    """The same from CMCL + reconstruction with the global term (its own results folder)."""


class nnUNetTrainerSeeded_modalityDropout_cpuPreset(_CPUPresetSegmentation, nnUNetTrainerSeeded_modalityDropout):
    """nnU-Net's trainer (seeded) with modality dropout at its default probability and the preset's budget: the
    control of the CMCL arm with dropout."""
    overrides = SEGMENTATION_BUDGET


# the measurement that chose the default probability (scripts/dropout_study.py, docs/missing_modalities.md): one
# trainer per probability, each naming it, so that a change of the default leaves their runs as they were
class nnUNetTrainerSeeded_modalityDropout_p10_cpuPreset(nnUNetTrainerSeeded_modalityDropout_cpuPreset):
    """The same with dropout probability 0.1."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.1}


class nnUNetTrainerSeeded_modalityDropout_p25_cpuPreset(nnUNetTrainerSeeded_modalityDropout_cpuPreset):
    """The same with dropout probability 0.25."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.25}


class nnUNetTrainerSeeded_modalityDropout_p50_cpuPreset(nnUNetTrainerSeeded_modalityDropout_cpuPreset):
    """The same with dropout probability 0.5."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.5}


class nnUNetTrainerCMCLFinetune_modalityDropout_cpuPreset(_CPUPresetSegmentation,
                                                          nnUNetTrainerCMCLFinetune_modalityDropout):
    """Fine-tuning from the default CMCL with modality dropout at its default probability and the preset's
    budget."""
    overrides = SEGMENTATION_BUDGET


class nnUNetTrainerCMCLFinetune_modalityDropout_p10_cpuPreset(nnUNetTrainerCMCLFinetune_modalityDropout_cpuPreset):
    """The same with dropout probability 0.1."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.1}


class nnUNetTrainerCMCLFinetune_modalityDropout_p25_cpuPreset(nnUNetTrainerCMCLFinetune_modalityDropout_cpuPreset):
    """The same with dropout probability 0.25."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.25}


class nnUNetTrainerCMCLFinetune_modalityDropout_p50_cpuPreset(nnUNetTrainerCMCLFinetune_modalityDropout_cpuPreset):
    """The same with dropout probability 0.5."""
    overrides = {**SEGMENTATION_BUDGET, "modality_dropout_probability": 0.5}


class _CPUPresetPretraining:
    """Mixin: the preset's pretraining budget and plot interval, the same for every pretrainer."""
    overrides = PRETRAINING_BUDGET
    plot_every = PLOT_EVERY


class nnUNetTrainerCMCL_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL):
    """The default CMCL (dense terms only): the preset's CMCL pretraining."""


class nnUNetTrainerCMCL_global_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_global):
    """CMCL with the global term: an arm to add beside the preset's (docs/study.md)."""


class nnUNetTrainerCMCL_recon_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_recon):
    """Reconstruction only: the preset's reconstruction pretraining."""


class nnUNetTrainerCMCL_DAE_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_DAE):
    """The default CMCL + reconstruction: the preset's CMCL + reconstruction pretraining."""


class nnUNetTrainerCMCL_DAE_global_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_DAE_global):
    """CMCL + reconstruction with the global term, the hybrid of the committed report's "CMCL + reconstruction"
    arm: an arm to add beside the preset's."""


# the BraTS-like preset (`study --preset cpu`): every segmentation arm with BRATS_SEGMENTATION_BUDGET, every
# pretraining with BRATS_PRETRAINING_BUDGET
class nnUNetTrainerSeeded_brats_cpuPreset(nnUNetTrainerSeeded_cpuPreset):
    """nnU-Net (seeded) with the BraTS-like budget: the baseline, and its learning curve
    (scripts/brats_learning_curve.py)."""
    overrides = BRATS_SEGMENTATION_BUDGET


class nnUNetTrainerSeeded_brats2x_cpuPreset(nnUNetTrainerSeeded_brats_cpuPreset):
    """The same with twice the epochs (8,000 iterations): the check of how much nnU-Net still gains beyond the
    BraTS-like budget (scripts/brats_learning_curve.py --trainer)."""
    overrides = {**BRATS_SEGMENTATION_BUDGET, "num_epochs": 2 * BRATS_SEGMENTATION_BUDGET["num_epochs"]}


class nnUNetTrainerCMCLFinetune_brats_cpuPreset(nnUNetTrainerCMCLFinetune_cpuPreset):
    """Fine-tuning from the default CMCL with the BraTS-like budget."""
    overrides = BRATS_SEGMENTATION_BUDGET


class nnUNetTrainerCMCLFinetune_fromRecon_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """The same from reconstruction-only pretraining (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromDAE_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """The same from the default CMCL + reconstruction (its own results folder)."""


class nnUNetTrainerSeeded_modalityDropout_brats_cpuPreset(nnUNetTrainerSeeded_modalityDropout_cpuPreset):
    """nnU-Net with modality dropout at its default probability, the BraTS-like budget."""
    overrides = BRATS_SEGMENTATION_BUDGET


class nnUNetTrainerCMCLFinetune_modalityDropout_brats_cpuPreset(nnUNetTrainerCMCLFinetune_modalityDropout_cpuPreset):
    """Fine-tuning from the default CMCL with modality dropout at its default probability, the BraTS-like budget."""
    overrides = BRATS_SEGMENTATION_BUDGET


class nnUNetTrainerCMCL_brats_cpuPreset(nnUNetTrainerCMCL_cpuPreset):
    """The default CMCL with the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


class nnUNetTrainerCMCL_recon_brats_cpuPreset(nnUNetTrainerCMCL_recon_cpuPreset):
    """Reconstruction only with the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


class nnUNetTrainerCMCL_DAE_brats_cpuPreset(nnUNetTrainerCMCL_DAE_cpuPreset):
    """The default CMCL + reconstruction with the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


# the alternatives the BraTS-like defaults are decided against (`study --preset cpu-defaults`, docs/method.md), each
# beside the default it would replace, with the same budgets
class nnUNetTrainerCMCL_global_brats_cpuPreset(nnUNetTrainerCMCL_global_cpuPreset):
    """CMCL with the global term, the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


class nnUNetTrainerCMCL_bottleneck_brats_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_bottleneck):
    """CMCL with the dense term on the bottleneck only, the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


class nnUNetTrainerCMCL_noFull_brats_cpuPreset(_CPUPresetPretraining, nnUNetTrainerCMCL_noFull):
    """CMCL without the full view, the BraTS-like pretraining budget."""
    overrides = BRATS_PRETRAINING_BUDGET


class nnUNetTrainerCMCLFinetune_fromGlobal_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """Fine-tuning from CMCL with the global term (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromBottleneck_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """Fine-tuning from CMCL with the dense term on the bottleneck only (its own results folder)."""


class nnUNetTrainerCMCLFinetune_fromNoFull_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """Fine-tuning from CMCL without the full view (its own results folder)."""


class nnUNetTrainerCMCLFinetune_warmup_brats_cpuPreset(nnUNetTrainerCMCLFinetune_brats_cpuPreset):
    """Fine-tuning from the default CMCL with nnUNetTrainerCMCLFinetune_warmup's linear warm-up, the BraTS-like
    budget."""
    overrides = {**BRATS_SEGMENTATION_BUDGET, **nnUNetTrainerCMCLFinetune_warmup.overrides}


class nnUNetTrainerSeeded_modalityDropout_p25_brats_cpuPreset(nnUNetTrainerSeeded_modalityDropout_brats_cpuPreset):
    """nnU-Net with modality dropout at probability 0.25, the BraTS-like budget."""
    overrides = {**BRATS_SEGMENTATION_BUDGET, "modality_dropout_probability": 0.25}

"""The demo's trainers: nnU-Net's and this package's trainers with the demo's short budgets, found by nnU-Net
through trainers/budgets/ (the demo and scripts/hybrid_study.py run them by name). The budgets are plain class
attributes, read when the module is imported, so a run's recorded settings (run_settings) hold them."""
from __future__ import annotations

import os

from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.pretraining.variants import nnUNetTrainerCMCL_Aug
from nnunet_cmcl.seeding import nnUNetTrainerSeeded
from nnunet_cmcl.study.unmirrored import UnmirroredFinalValidation
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune

# sized so that the demo on the BraTS-like data (4 channels, 3d_fullres) takes at most 20 minutes on 2 cores: with
# 8 pretraining epochs and 5 validation batches it took 1,402 s, the pretraining 10 minutes of it (70 s an epoch)
PRETRAINING_BUDGET = {"num_epochs": 5, "num_iterations_per_epoch": 30, "num_val_iterations_per_epoch": 4}
# one budget for the two segmentation trainers, so the comparison is fair
SEGMENTATION_BUDGET = {"num_epochs": 8, "num_iterations_per_epoch": 12, "num_val_iterations_per_epoch": 3}
SCALE_ENV = "nnUNet_CMCL_demo_scale"  # < 1 shrinks every budget alike: for checks of the plumbing, not results


def scaled(budget: dict) -> dict:
    scale = float(os.environ.get(SCALE_ENV, "1"))
    return {k: max(1, round(v * scale)) for k, v in budget.items()}


class _PretrainingBudget:
    """Mixin: the demo's pretraining budget for any CMCL trainer (read by its __init__ through ``overrides``)."""
    overrides = scaled(PRETRAINING_BUDGET)


class nnUNetTrainerCMCL_demo(_PretrainingBudget, nnUNetTrainerCMCL):
    """The default CMCL with the demo's pretraining budget."""


class nnUNetTrainerCMCLFinetune_demo(UnmirroredFinalValidation, nnUNetTrainerCMCLFinetune):
    """The default fine-tuning schedule with the demo's budget (final validation unmirrored, as the baseline's)."""
    overrides = scaled(SEGMENTATION_BUDGET)


class nnUNetTrainerCMCL_DAE_demo(_PretrainingBudget, nnUNetTrainerCMCL_DAE):
    """The default CMCL + reconstruction with the demo's pretraining budget (scripts/hybrid_study.py)."""


class nnUNetTrainerCMCL_Aug_demo(_PretrainingBudget, nnUNetTrainerCMCL_Aug):
    """One-modality views with the demo's pretraining budget (scripts/hybrid_study.py)."""


class nnUNetTrainerCMCLFinetune_fromDAE_demo(nnUNetTrainerCMCLFinetune_demo):
    """The same fine-tuning as nnUNetTrainerCMCLFinetune_demo, in its own results folder (for DAE checkpoints)."""


class nnUNetTrainerSeeded_demo(UnmirroredFinalValidation, nnUNetTrainerSeeded):
    """nnU-Net's own trainer, unchanged but for the demo's budget, the fold's training seed and a final validation
    without test-time mirroring (8 passes per 3d patch instead of 1, the same for both arms): the baseline."""
    overrides = scaled(SEGMENTATION_BUDGET)

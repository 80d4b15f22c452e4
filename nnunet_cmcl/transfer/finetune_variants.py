"""Variants of nnUNetTrainerCMCLFinetune, one subclass a change, and their schedule-matched scratch controls.

A pretrained arm and its ``_scratch`` control share every setting but the weights they start from, so a
difference between them is the pretraining's, not the schedule's (warm-up, peak learning rate).
"""
from __future__ import annotations

from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune


class nnUNetTrainerCMCLFinetune_scratch(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune's schedule from random weights (refuses -pretrained_weights)."""
    accepts_pretrained_weights = False


class nnUNetTrainerCMCLFinetune_lr1e3(nnUNetTrainerCMCLFinetune):
    """The recipe of nnU-Net's PretrainedTrainer and "Revisiting MAE" for pretrained encoders: peak learning rate
    1e-3 (nnU-Net's default is 1e-2), linear warm-up, encoder trained from the start."""
    overrides = {"initial_lr": 1e-3}


class nnUNetTrainerCMCLFinetune_lr1e3_scratch(nnUNetTrainerCMCLFinetune_lr1e3):
    """nnUNetTrainerCMCLFinetune_lr1e3's schedule from random weights (refuses -pretrained_weights)."""
    accepts_pretrained_weights = False


class nnUNetTrainerCMCLFinetune_noWarmup(nnUNetTrainerCMCLFinetune):
    """nnU-Net's own schedule (peak lr 1e-2 from the first step, poly decay) from pretrained weights: without the
    warm-up its schedule-matched control is nnU-Net's default trainer itself. On the CPU preset, the 5 % warm-up
    alone cost the scratch control 0.02-0.06 Dice against nnU-Net (docs/study.md)."""
    overrides = {"warmup_fraction": 0.0}  # a ramp of 1 iteration: lr(0) is already the peak


class nnUNetTrainerCMCLFinetune_fromRecon(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune in its own results folder, for checkpoints of reconstruction-only pretraining
    (nnUNetTrainerCMCL_recon): a study compares the two pretrainings with one fine-tuning schedule."""


class nnUNetTrainerCMCLFinetune_fromDAE(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune in its own results folder, for checkpoints of CMCL + reconstruction
    (nnUNetTrainerCMCL_DAE)."""


class nnUNetTrainerCMCLFinetune_fromStages(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune in its own results folder, for checkpoints of CMCL with dense terms on the
    stages above the bottleneck (nnUNetTrainerCMCL_stages)."""

"""Variants of nnUNetTrainerCMCLFinetune, one subclass a change, and their schedule-matched scratch controls.

A pretrained arm and its ``_scratch`` control share every setting but the weights they start from, so a
difference between them is the pretraining's, not the schedule's (warm-up, peak learning rate).
"""
from __future__ import annotations

from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune


class nnUNetTrainerCMCLFinetune_scratch(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune's schedule from random weights (refuses -pretrained_weights). With the default
    schedule (no warm-up) it trains what nnU-Net's default trainer trains, bit for bit on the CPU."""
    accepts_pretrained_weights = False


class nnUNetTrainerCMCLFinetune_warmup(nnUNetTrainerCMCLFinetune):
    """A linear warm-up over the first 5 % of iterations (at most 50 epochs), then nnU-Net's poly decay: the ramp
    of nnU-Net's PretrainedTrainer, meant to keep a random decoder's first gradients from wrecking the encoder."""
    overrides = {"warmup_fraction": 0.05}


class nnUNetTrainerCMCLFinetune_warmup_scratch(nnUNetTrainerCMCLFinetune_warmup):
    """nnUNetTrainerCMCLFinetune_warmup's schedule from random weights (refuses -pretrained_weights)."""
    accepts_pretrained_weights = False


class nnUNetTrainerCMCLFinetune_lr1e3(nnUNetTrainerCMCLFinetune):
    """The recipe of nnU-Net's PretrainedTrainer and "Revisiting MAE" for pretrained encoders: peak learning rate
    1e-3 (nnU-Net's default is 1e-2), a linear warm-up over 5 %, encoder trained from the start."""
    overrides = {"initial_lr": 1e-3, "warmup_fraction": 0.05}


class nnUNetTrainerCMCLFinetune_lr1e3_scratch(nnUNetTrainerCMCLFinetune_lr1e3):
    """nnUNetTrainerCMCLFinetune_lr1e3's schedule from random weights (refuses -pretrained_weights)."""
    accepts_pretrained_weights = False


class nnUNetTrainerCMCLFinetune_fromRecon(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune in its own results folder, for checkpoints of reconstruction-only pretraining
    (nnUNetTrainerCMCL_recon): a study compares the two pretrainings with one fine-tuning schedule."""


class nnUNetTrainerCMCLFinetune_fromDAE(nnUNetTrainerCMCLFinetune):
    """nnUNetTrainerCMCLFinetune in its own results folder, for checkpoints of CMCL + reconstruction
    (nnUNetTrainerCMCL_DAE)."""


"""Variants of nnUNetTrainerCMCL in nnU-Net's style: one subclass a change, chosen with -tr."""
from __future__ import annotations

from dataclasses import replace

from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_100epochs(nnUNetTrainerCMCL):
    overrides = {"num_epochs": 100}


class nnUNetTrainerCMCL_250epochs(nnUNetTrainerCMCL):
    overrides = {"num_epochs": 250}


class nnUNetTrainerCMCL_global(nnUNetTrainerCMCL):
    """The global (per-sample) InfoNCE term, with its centred head, momentum encoder and key queue, beside the
    dense terms: the default until the CPU study found that it adds nothing downstream (docs/study.md)."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, weight_global=1.0)


class nnUNetTrainerCMCL_globalOnly(nnUNetTrainerCMCL):
    """Only the global (per-sample) InfoNCE term."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, weight_global=1.0, weight_dense=0.0, dense_stages=0)



class nnUNetTrainerCMCL_single(nnUNetTrainerCMCL):
    """Each view holds one modality (instead of a complementary partition of all modalities)."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, view_strategy="single")



class nnUNetTrainerCMCL_noFull(nnUNetTrainerCMCL):
    """Modality views only: the encoder never sees every channel at once (the default before the full view)."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, add_full_view=False)


class nnUNetTrainerCMCL_Aug(nnUNetTrainerCMCL):
    """For one-modality data (e.g. CT), any channel count: each view has every channel, the views are the same
    patch with different random gamma, contrast, brightness, low resolution and noise."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, view_strategy="augment", add_full_view=False,
                          augment_gamma=0.3, augment_contrast=0.25, augment_brightness=0.25,
                          low_resolution_probability=0.3, noise_std=0.2)



class nnUNetTrainerCMCL_bottleneck(nnUNetTrainerCMCL):
    """Dense term on the bottleneck only (the default before ``dense_stages`` = 2): the stages that feed nnU-Net's
    skips learn only through what the bottleneck's loss passes down."""
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, dense_stages=0)

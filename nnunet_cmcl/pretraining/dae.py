"""nnUNetTrainerCMCL_DAE: CMCL plus reconstruction of disrupted views through nnU-Net's whole U-Net.

A hybrid of cross-modal contrastive learning and a disruptive autoencoder (Valanarasu et al. 2023). The views
(channel-masked, low-resolution, noisy, with masked cubes) go through the encoder once; the bottleneck feeds the
CMCL heads and the skips feed nnU-Net's own decoder, which rebuilds every channel of the undisrupted crop, so a
view that lacks a modality has to synthesise it. The decoder is built with one output per input channel: only
its last 1x1 layer (``seg_layers``) differs from a segmentation network of the same plans, and nnU-Net's
``load_pretrained_weights`` never transfers ``seg_layers``, so fine-tuning starts with a pretrained encoder AND
decoder.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence

import torch
import torch.nn.functional as F

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.losses import CMCLLoss
from nnunet_cmcl.pretraining.model import CMCLModel
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL

RECONSTRUCTION_LOG_KEY = "train_loss_reconstruction"


def reconstruction_loss(reconstruction: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32, also where the decoder ran in half precision under autocast."""
    return F.mse_loss(reconstruction.float(), crops.float())


class CMCLReconstructionLoss(CMCLLoss):
    """CMCLLoss + weight_reconstruction * MSE between out['reconstruction'] and the undisrupted out['crops'],
    both (V*B, C, *crop); the term is returned as 'loss_reconstruction' too."""

    def __init__(self, config: CMCLConfig, bottleneck_spacing: Sequence[float] | None = None):
        super().__init__(config, bottleneck_spacing)
        self.weight_reconstruction = config.weight_reconstruction

    def forward(self, out: dict[str, torch.Tensor], case_ids: torch.Tensor | None = None,
                queue: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        terms = super().forward(out, case_ids, queue)
        terms["loss_reconstruction"] = reconstruction_loss(out["reconstruction"], out["crops"])
        terms["loss"] = terms["loss"] + self.weight_reconstruction * terms["loss_reconstruction"]
        return terms


class nnUNetTrainerCMCL_DAE(nnUNetTrainerCMCL):
    """CMCL plus reconstruction: ``nnUNetv2_train D C all -tr nnUNetTrainerCMCL_DAE``; fine-tune with
    ``-pretrained_weights`` as after CMCL (encoder and decoder transfer)."""

    # the default CMCL (dense terms only) plus the reconstruction term and the disruptions it needs
    cmcl_config = replace(nnUNetTrainerCMCL.cmcl_config, weight_reconstruction=1.0,
                          low_resolution_probability=0.3, noise_std=0.2, mask_ratio=0.3, mask_block=8)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.cmcl_config.weight_reconstruction <= 0:
            # the decoder would take no part in the loss, and DDP refuses parameters without gradient
            raise CMCLInputError(f"{type(self).__name__} needs weight_reconstruction > 0; use nnUNetTrainerCMCL for "
                             f"CMCL alone")
        self.logger.local_logger.my_fantastic_logging.setdefault(RECONSTRUCTION_LOG_KEY, [])

    def build_network_architecture(self, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> CMCLModel:
        """The CMCL model with nnU-Net's decoder attached; the decoder outputs one channel per input channel."""
        model = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                   num_input_channels, enable_deep_supervision)
        decoder = self.plain_network.decoder
        # without deep supervision only the last seg layer computes an output; the others get no gradient
        # and must not require one (DDP)
        for unused in decoder.seg_layers[:-1]:
            unused.requires_grad_(False)
        model.decoder = decoder
        return model

    def _build_loss(self) -> CMCLReconstructionLoss:
        return CMCLReconstructionLoss(self.cmcl_config, self._bottleneck_spacing()).to(self.device)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        self.logger.log(RECONSTRUCTION_LOG_KEY, self._epoch_mean(train_outputs, "loss_reconstruction"),
                        self.current_epoch)

    def on_epoch_end(self):
        # before super(): it moves on to the next epoch
        self.print_to_log_file(f"train_loss_reconstruction {self._get(RECONSTRUCTION_LOG_KEY):.4f}")
        super().on_epoch_end()


class nnUNetTrainerCMCL_DAE_global(nnUNetTrainerCMCL_DAE):
    """CMCL plus reconstruction with the global term too: the hybrid the CPU study measured as "CMCL +
    reconstruction" (docs/study.md), before the global term left CMCL's default."""

    cmcl_config = replace(nnUNetTrainerCMCL_DAE.cmcl_config, weight_global=1.0)


class nnUNetTrainerCMCL_recon(nnUNetTrainerCMCL_DAE):
    """Reconstruction only: nnUNetTrainerCMCL_DAE with the contrastive terms off (no heads), the field's strong
    self-supervised baseline (a disruptive/masked autoencoder through nnU-Net's own U-Net, as in "Revisiting MAE").
    Same views, disruptions and budget as the hybrid, so the two differ by the contrastive terms alone."""

    cmcl_config = replace(nnUNetTrainerCMCL_DAE.cmcl_config, weight_global=0.0, weight_dense=0.0,
                          dense_stages=0)

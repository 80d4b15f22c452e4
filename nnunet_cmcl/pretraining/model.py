"""The module that CMCL pretraining optimises: nnU-Net's own encoder plus the projection heads.

It is what nnU-Net compiles and wraps in DDP. The decoder is a submodule only where it is trained
(nnUNetTrainerCMCL_DAE): DDP refuses parameters that take no part in the loss.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.heads import DenseHead, GlobalHead
from nnunet_cmcl.pretraining.views import ViewGeometry, ViewSampler


class CMCLModel(nn.Module):
    def __init__(self, encoder: nn.Module, sampler: ViewSampler, bottleneck_channels: int, config: CMCLConfig):
        super().__init__()
        self.encoder = encoder
        self.sampler = sampler
        # None: no reconstruction. nnUNetTrainerCMCL_DAE assigns nnU-Net's decoder of this encoder here, built with
        # one output per input channel (assigning a module registers it as a submodule)
        self.decoder: nn.Module | None = None
        self.return_views = config.queue_size > 0 and config.weight_global > 0  # the momentum encoder's input
        self.heads = nn.ModuleDict()
        if config.weight_global > 0:
            self.heads["global"] = GlobalHead(bottleneck_channels, config.head_hidden, config.head_out)
        if config.weight_dense > 0:
            self.heads["dense"] = DenseHead(bottleneck_channels, config.head_hidden, config.head_out)

    def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        """data (B, C, *P) -> 'global' (V, B, D), 'dense' (V, B, M, D), 'positions' (B, M, d), 'inside' (B, M); with
        a decoder also
        'reconstruction' and its target 'crops', both (V*B, C, *Q).

        All V*B views go through the encoder in one pass, which serves both the heads and the decoder.
        """
        crops, geometry = self.sampler.crop(data)
        views = self.sampler.make_views(crops)
        skips = self.encoder(views)
        out = self.project(skips[-1], geometry)
        if self.return_views:
            out["views"] = views
        if self.decoder is not None:
            # every channel of the undisrupted crop, also those the view's channel mask removed
            out["reconstruction"] = self.decoder(skips)
            out["crops"] = crops
        return out

    def project(self, bottleneck: torch.Tensor, geometry: ViewGeometry) -> dict[str, torch.Tensor]:
        """bottleneck (V*B, F, *Q_bottleneck) of the views and their geometry -> 'global', 'dense', 'positions'
        and 'inside' (B, M) bool: which dense locations lie inside the image."""
        v, b = geometry.offsets.shape[:2]
        out = {}
        if "global" in self.heads:
            out["global"] = self.heads["global"](bottleneck).view(v, b, -1)
        if "dense" in self.heads:
            positions, flat_index, inside = self.sampler.sample_locations(geometry)
            dense = self.heads["dense"](bottleneck, flat_index.reshape(v * b, -1))
            out["dense"] = dense.view(v, b, *dense.shape[1:])
            out["positions"] = positions
            out["inside"] = inside
        return out

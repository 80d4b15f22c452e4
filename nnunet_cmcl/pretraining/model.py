"""The module that CMCL pretraining optimises: nnU-Net's own encoder plus the projection heads.

It is what nnU-Net compiles and wraps in DDP. The decoder is a submodule only where it is trained
(nnUNetTrainerCMCL_DAE): DDP refuses parameters that take no part in the loss.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.heads import DenseHead, GlobalHead
from nnunet_cmcl.pretraining.views import ViewGeometry, ViewSampler, total_strides


def stage_key(k: int) -> str:
    """Output and head name of the dense term k stages above the bottleneck."""
    return f"dense_stage{k}"


class CMCLModel(nn.Module):
    def __init__(self, encoder: nn.Module, sampler: ViewSampler, config: CMCLConfig):
        """encoder: nnU-Net's encoder (it returns the output of every stage; ``strides`` and ``output_channels``
        per stage)."""
        super().__init__()
        self.encoder = encoder
        self.sampler = sampler
        # None: no reconstruction. nnUNetTrainerCMCL_DAE assigns nnU-Net's decoder of this encoder here, built with
        # one output per input channel (assigning a module registers it as a submodule)
        self.decoder: nn.Module | None = None
        self.return_views = config.queue_size > 0 and config.weight_global > 0  # the momentum encoder's input
        self.heads = nn.ModuleDict()
        channels = encoder.output_channels
        if config.weight_global > 0:
            self.heads["global"] = GlobalHead(channels[-1], config.head_hidden, config.head_out)
        if config.weight_dense > 0:
            self.heads["dense"] = DenseHead(channels[-1], config.head_hidden, config.head_out)
        if config.dense_stages >= len(channels):
            raise CMCLInputError(f"dense_stages={config.dense_stages} needs as many encoder stages above the "
                                 f"bottleneck; this encoder has {len(channels) - 1}: lower dense_stages")
        # the location samplers of the stages above the bottleneck, each drawing its own stage_locations: stage
        # -1-k is finer by the product of the last k strides
        self.stage_grids = nn.ModuleList()
        for k in range(1, config.dense_stages + 1):
            self.stage_grids.append(sampler.stage_grid(total_strides(encoder.strides[-k:]), config.stage_locations))
            self.heads[stage_key(k)] = DenseHead(channels[-1 - k], config.head_hidden, config.head_out)

    def forward(self, data: torch.Tensor, inside: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """data (B, C, *P), inside (B, 1, *P) bool (``outside.inside_image``; None: every voxel is image) -> 'global'
        (V, B, D), 'dense' (V, B, M, D), 'positions' (B, M, d), 'inside' (B, M) and the stages' (``project``); with a
        decoder also 'reconstruction' and its target 'crops', both (V*B, C, *Q).

        All V*B views go through the encoder in one pass, which serves both the heads and the decoder.
        """
        crops, geometry = self.sampler.crop(data, inside)
        views = self.sampler.make_views(crops)
        skips = self.encoder(views)
        out = self.project(skips, geometry)
        if self.return_views:
            out["views"] = views
        if self.decoder is not None:
            # every channel of the undisrupted crop, also those the view's channel mask removed
            out["reconstruction"] = self.decoder(skips)
            out["crops"] = crops
        return out

    def project(self, skips: list[torch.Tensor], geometry: ViewGeometry) -> dict[str, torch.Tensor]:
        """The encoder's stage outputs (V*B, F, *Q_stage) of the views, the bottleneck last, and their geometry ->
        'global', 'dense', 'positions', 'inside' (B, M) bool: which dense locations lie inside the image; with
        ``dense_stages`` also 'dense_stage{k}' (V, B, M_k, D), 'positions_stage{k}' (B, M_k, d) in bottleneck voxels
        and 'inside_stage{k}' (B, M_k) bool, M_k the stage's own number of locations."""
        bottleneck = skips[-1]
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
            for k, grid in enumerate(self.stage_grids, start=1):
                stage_positions, stage_index, stage_inside = grid(geometry)
                dense = self.heads[stage_key(k)](skips[-1 - k], stage_index.reshape(v * b, -1))
                out[stage_key(k)] = dense.view(v, b, *dense.shape[1:])
                out[f"positions_stage{k}"] = stage_positions
                out[f"inside_stage{k}"] = stage_inside
        return out

"""Projection heads on the encoder bottleneck. They are trained with the encoder and saved beside,
never inside, ``network_weights``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(in_features: int, hidden: int, out: int) -> nn.Sequential:
    # LayerNorm, not BatchNorm: nnU-Net's 3D batches are often 2 samples
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class GlobalHead(nn.Module):
    """features (N, F, *S) -> per-voxel MLP layer -> average over voxels -> linear -> L2-normalised (N, D), float32.

    The first layer runs per voxel, before pooling: nnU-Net's encoders end in InstanceNorm, which fixes
    every channel's mean per sample, so a plain average of the bottleneck is almost the same for every
    sample and carries little to contrast.
    """

    def __init__(self, in_features: int, hidden: int, out: int):
        super().__init__()
        self.voxel = nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.voxel(features.flatten(2).transpose(1, 2)).mean(dim=1)  # (N, hidden)
        return F.normalize(self.out(pooled).float(), dim=-1)


class DenseHead(nn.Module):
    """features (N, F, *S) at flat indices (N, M) -> MLP -> L2-normalised (N, M, D), float32.

    Equal to a 1x1 conv MLP over the whole map followed by sampling, but only the M sampled
    locations are computed.
    """

    def __init__(self, in_features: int, hidden: int, out: int):
        super().__init__()
        self.mlp = _mlp(in_features, hidden, out)

    def forward(self, features: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
        flat = features.flatten(2)  # (N, F, S)
        picked = flat.gather(2, flat_index[:, None, :].expand(-1, flat.shape[1], -1))  # (N, F, M)
        return F.normalize(self.mlp(picked.transpose(1, 2)).float(), dim=-1)

"""Projection heads on the encoder bottleneck. They are trained with the encoder and saved beside,
never inside, ``network_weights``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_cmcl.dist import mean_over_ranks


def _mlp(in_features: int, hidden: int, out: int) -> nn.Sequential:
    # LayerNorm, not BatchNorm: nnU-Net's 3D batches are often 2 samples
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class GlobalHead(nn.Module):
    """features (N, F, *S) -> per-voxel MLP layer -> average over voxels -> centre -> linear -> L2-normalised
    (N, D), float32.

    The first layer runs per voxel, before pooling: nnU-Net's encoders end in InstanceNorm, which fixes every
    channel's mean per sample, so a plain average of the bottleneck is almost the same for every sample. Even
    after the per-voxel layer the pooled vectors share one dominant component (the mean of a ReLU is about the
    same everywhere): uncentred, an untrained head gives embeddings with pairwise cosine ~0.998 and the InfoNCE
    logits differ by less than 0.01 / temperature. So the pooled vector is centred, as DINO centres its teacher
    outputs: by a running mean of the pooled vectors (momentum ``centre_momentum``, batch means taken over all
    ranks, the first batch sets it). Not by the batch's own mean: at nnU-Net's batch of 2 that would make the two
    samples' embeddings mirror images of each other. The last layer has no bias: on centred input a bias would be
    the shared component again (centring alone still gave pairwise cosine 0.85).
    """

    def __init__(self, in_features: int, hidden: int, out: int, centre_momentum: float = 0.9):
        super().__init__()
        self.voxel = nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, out, bias=False)
        self.centre_momentum = centre_momentum
        self.register_buffer("centre", torch.zeros(hidden))
        self.register_buffer("centre_initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.voxel(features.flatten(2).transpose(1, 2)).mean(dim=1)  # (N, hidden)
        if self.training:
            self._update_centre(mean_over_ranks(pooled.detach().float().mean(dim=0)))
        return F.normalize(self.out(pooled - self.centre.to(pooled.dtype)).float(), dim=-1)

    @torch.no_grad()
    def _update_centre(self, batch_centre: torch.Tensor) -> None:
        # the first batch sets the centre (a zero start would leave evaluation uncentred for the first epochs); a
        # non-finite batch (its step is skipped) leaves it alone, else one bad batch would poison every later one.
        # torch.where, not an if on a flag: no host sync
        m = torch.where(self.centre_initialised, self.centre_momentum, 0.0)
        finite = torch.isfinite(batch_centre).all()
        self.centre.copy_(torch.where(finite, m * self.centre + (1 - m) * batch_centre, self.centre))
        self.centre_initialised.logical_or_(finite)


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

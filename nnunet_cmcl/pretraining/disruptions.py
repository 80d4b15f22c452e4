"""Random intensity changes and disruptions of a batch of views, made on the device.

Every function takes x (N, C, *S) and draws its random parameters per sample (and channel, where said)
in one tensor operation: no Python loop runs over samples. A zero strength returns x itself, so a switched-off
disruption costs nothing. Intensities are nnU-Net's normalised ones (z-scores for MR and CT).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _per_sample_channel(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(N, C, 1, ..., 1) uniform draws in [low, high)."""
    shape = (*x.shape[:2], *[1] * (x.dim() - 2))
    return torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(low, high)


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, ..., 1) uniform draws in [0, 1)."""
    return torch.rand((x.shape[0], *[1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)


def random_intensity(x: torch.Tensor, gamma: float, contrast: float, brightness: float) -> torch.Tensor:
    """Gamma exp(U(-gamma, gamma)) on each channel's min-max range, contrast factor U(1 - contrast, 1 + contrast)
    around the channel's mean, brightness shift U(-brightness, brightness); drawn per sample and channel.

    Each change is increasing in the intensity (contrast < 1), so the order of a channel's voxels is kept:
    the views differ in appearance, never in anatomy.
    """
    spatial = tuple(range(2, x.dim()))
    if gamma > 0:
        low, high = x.amin(dim=spatial, keepdim=True), x.amax(dim=spatial, keepdim=True)
        span = (high - low).clamp_min(1e-6)  # a constant channel stays constant
        unit = ((x - low) / span).clamp(0, 1)
        x = unit.pow(torch.exp(_per_sample_channel(x, -gamma, gamma))) * span + low
    if contrast > 0:
        mean = x.mean(dim=spatial, keepdim=True)
        x = (x - mean) * _per_sample_channel(x, 1 - contrast, 1 + contrast) + mean
    if brightness > 0:
        x = x + _per_sample_channel(x, -brightness, brightness)
    return x


def low_resolution(x: torch.Tensor, probability: float, factor: int) -> torch.Tensor:
    """With the given probability per sample: average-pooled to 1/factor of the size, interpolated back."""
    if probability <= 0:
        return x
    size = x.shape[2:]
    small = F.interpolate(x, size=[max(1, s // factor) for s in size], mode="area")
    restored = F.interpolate(small, size=size, mode=_INTERPOLATION[len(size)], align_corners=False)
    # computed for every sample and selected: shapes stay static (torch.compile) and there is no host sync
    return torch.where(_per_sample(x) < probability, restored, x)


def gaussian_noise(x: torch.Tensor, max_std: float) -> torch.Tensor:
    """Adds Gaussian noise of std U(0, max_std) drawn per sample: views see clean to noisy inputs."""
    if max_std <= 0:
        return x
    return x + _per_sample(x) * max_std * torch.randn_like(x)


def mask_cubes(x: torch.Tensor, ratio: float, block: int) -> torch.Tensor:
    """Zeroes (nnU-Net's normalised mean) each cube of a block^d grid with the given probability, in every
    channel of a sample at once, so that the cube has to be inferred from its surroundings."""
    if ratio <= 0:
        return x
    size = x.shape[2:]
    grid = [-(-s // block) for s in size]  # ceil: the last cube of an axis may be cut by the border
    keep = (torch.rand((x.shape[0], 1, *grid), device=x.device) >= ratio).to(x.dtype)
    for axis in range(len(size)):
        keep = keep.repeat_interleave(block, dim=2 + axis)
    return x * keep[(..., *[slice(0, s) for s in size])]

"""Modality views of one nnU-Net batch, built on the device.

A view is a sub-crop of the loaded patch in which the channels outside the view's modality subset
are set to 0 (the mean after nnU-Net's z-score). The channel count never changes, so the pretrained
network has the fine-tuning network's shapes. Each view is shifted by a random multiple of the
encoder's total stride, so bottleneck voxels of different views still line up, and (``flip_views``) mirrored
along random axes, with the correspondence of bottleneck voxels mapped. A CNN with zero padding knows where in
its input a voxel lies; with shifts alone the partner of a location sits at (nearly) the same place in every
view, so positives could be matched by position. Dense locations are drawn inside the image where the patch
allows (``dense_inside_image``): nnU-Net pads with 0 in every channel, so the padded region has the same
silhouette in every modality and would identify a location too.

How flips are aligned. nnU-Net's encoders downsample with stride-2, 3-tap, padding-1 convolutions (stage 0 has
stride 1), so output voxel j of a stage of total stride s is centred on input voxel s*j of its view, the first
voxel of its cell, not the cell's centre s*j + (s-1)/2. Reading a crop backwards from its last voxel would put
a flipped view's voxel s - 1 input voxels away from its unflipped partner on every flipped axis (31 at a stride-32
bottleneck). A flipped axis instead reads ``crop[i] = patch[base - i]`` from ``base = off + S*(Q - 1)`` (off: the
corner ``offsets * S`` of the unflipped view of the same offset, S the bottleneck's total stride, Q the view's
bottleneck size): bottleneck voxel j_f is then centred on patch voxel ``off + S*(Q - 1 - j_f)``, and at a stage
r times finer (s = S/r, Q_s = r*Q voxels) voxel j_f on ``off + s*(Q_s - r - j_f)``: one window aligns every stage,
each with its own mirrored index ``Q_s - r - j``. The window lies S - 1 input voxels lower in the patch than the
unflipped one, so a flipped axis takes its offset from 1..shift_steps (0..shift_steps unflipped, where S = 1
on the axis), and an axis that has no shift (shift_steps = 0) is never flipped. Of the bottleneck voxel that a
flipped view holds at its index 0 (the view's highest in the patch) only the first of the r stage voxels lies in
that view, so a location there takes that one on that axis. For PlainConvEncoder the partners' receptive fields
then coincide exactly;
ResidualEncoder's skip path (AvgPool(2, 2) then a 1x1 conv) is centred on 2j + 0.5 and no integer shift mirrors
it: see ``StageGrid``.

With ``view_strategy='augment'`` (one-modality data) no channel is removed: the views differ by random
intensity changes instead. Any strategy can add disruptions (low resolution, noise, masked cubes).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.disruptions import gaussian_noise, low_resolution, mask_cubes, random_intensity


class ViewGeometry(NamedTuple):
    """Where each view lies in the patch: what maps a bottleneck location of the patch to each view's."""
    # (V, B, d) long: the view's corner in bottleneck voxels of the patch: its bottleneck voxel j lies on the patch's
    # offsets + j, or offsets + Q - 1 - j where flipped (the flipped crop itself starts S - 1 input voxels lower)
    offsets: torch.Tensor
    flips: torch.Tensor  # (V, B, d) bool: the view is mirrored along the axis (never where shift_steps is 0)
    inside: torch.Tensor  # (B, N) bool: the patch's bottleneck voxels that lie mostly inside the image


def modality_groups(channel_names: dict) -> list[list[int]]:
    """Channel indices grouped by modality name, in channel order.

    Channels that share a name in ``dataset.json`` ``channel_names`` are one modality.
    """
    by_name: dict[str, list[int]] = {}
    for key in sorted(channel_names, key=int):
        by_name.setdefault(str(channel_names[key]), []).append(int(key))
    return list(by_name.values())


def total_strides(encoder_strides: Sequence[Sequence[int]]) -> list[int]:
    """Per-axis product of the encoder's stage strides: one bottleneck voxel spans this many input voxels."""
    return [math.prod(s[axis] for s in encoder_strides) for axis in range(len(encoder_strides[0]))]


def check_modalities(groups: list[list[int]], config: CMCLConfig) -> None:
    """Raises CMCLInputError when the dataset's modalities cannot give the configured views."""
    if config.view_strategy == "augment":
        return  # every view holds every channel: any number of modalities gives the views
    if len(groups) < 2:
        raise CMCLInputError(
            f"CMCL needs at least 2 modalities, the dataset has {len(groups)} (channels {groups}); "
            f"give each modality its own name in dataset.json channel_names, "
            f"or use nnUNetTrainerCMCL_Aug for one-modality data")
    if len(groups) < config.num_views:
        raise CMCLInputError(
            f"num_views={config.num_views} needs as many modalities, the dataset has {len(groups)}; "
            f"use a trainer variant with num_views <= {len(groups)}")


class ViewSampler(nn.Module):
    """Makes V views of each sample and samples voxel-aligned bottleneck locations.

    V = ``config.num_views`` (+1 with ``add_full_view``). Holds no parameters.
    """

    def __init__(self, groups: list[list[int]], num_channels: int, patch_size: Sequence[int],
                 strides: Sequence[int], config: CMCLConfig):
        super().__init__()
        self.config = config
        self.num_groups = len(groups)
        check_modalities(groups, config)
        for p, s in zip(patch_size, strides):
            if p % s:
                raise CMCLInputError(f"patch size {tuple(patch_size)} is not divisible by the encoder's total "
                                     f"stride {tuple(strides)}; use plans made by nnUNetv2_plan_and_preprocess")
        self.strides = list(strides)
        self.patch_bottleneck = [p // s for p, s in zip(patch_size, strides)]
        # shifting by m strides leaves Pb - m bottleneck voxels a view and >= Pb - 2m shared by all views
        self.shift_steps = [min(config.max_shift_steps, (pb - 1) // 2) for pb in self.patch_bottleneck]
        self.crop_size = [p - m * s for p, m, s in zip(patch_size, self.shift_steps, strides)]
        self.view_bottleneck = [pb - m for pb, m in zip(self.patch_bottleneck, self.shift_steps)]
        min_overlap = math.prod(pb - 2 * m for pb, m in zip(self.patch_bottleneck, self.shift_steps))
        self.num_locations = min(config.dense_locations, min_overlap)
        channel_to_group = torch.empty(num_channels, dtype=torch.long)
        for g, channels in enumerate(groups):
            channel_to_group[channels] = g
        # constants of the step as buffers: they move to the device once. Built per step from Python lists, each
        # would be a blocking host-to-device copy, which waits for all queued GPU work (a host sync)
        d = len(patch_size)
        self.register_buffer("channel_to_group", channel_to_group, persistent=False)
        self.register_buffer("shift_steps_t", torch.tensor(self.shift_steps), persistent=False)
        self.register_buffer("strides_t", torch.tensor(self.strides), persistent=False)
        # the smallest offset of a flipped axis: its crop starts S - 1 input voxels below offset * S (module
        # docstring); an axis that cannot shift there is never flipped
        flip_min = torch.tensor([int(s > 1) for s in self.strides])
        self.register_buffer("flip_min_t", flip_min, persistent=False)
        self.register_buffer("can_flip_t", self.shift_steps_t >= flip_min, persistent=False)
        self.register_buffer("view_size_t", torch.tensor(self.view_bottleneck), persistent=False)
        self.register_buffer("flat_stride_t", torch.tensor([math.prod(self.view_bottleneck[i + 1:]) for i in range(d)]),
                             persistent=False)
        grid = torch.meshgrid(*[torch.arange(n) for n in self.patch_bottleneck], indexing="ij")
        self.register_buffer("bottleneck_grid", torch.stack(grid, dim=-1).view(-1, d), persistent=False)  # (N, d)

    @property
    def num_views(self) -> int:
        return self.config.total_views

    def channel_masks(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(V, B, C) float mask, 1 where the view keeps the channel (modality strategies; 'augment' keeps all)."""
        k, g = self.config.num_views, self.num_groups
        order = torch.rand(batch_size, g, device=device).argsort(dim=1)  # random modality order per sample
        if self.config.view_strategy == "single":
            group_view = torch.full((batch_size, g), -1, device=device, dtype=torch.long)
            group_view.scatter_(1, order[:, :k], torch.arange(k, device=device).expand(batch_size, k))
        else:  # complementary partition: the first k modalities seed the k views, the rest go anywhere
            view_of_rank = torch.cat([torch.arange(k, device=device).expand(batch_size, k),
                                      torch.randint(0, k, (batch_size, g - k), device=device)], dim=1)
            group_view = torch.empty_like(order).scatter_(1, order, view_of_rank)
        group_mask = group_view[None] == torch.arange(k, device=device)[:, None, None]  # (k, B, G)
        masks = group_mask[:, :, self.channel_to_group].float()  # (k, B, C)
        if self.config.add_full_view:
            masks = torch.cat([masks, torch.ones_like(masks[:1])], dim=0)
        return masks

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, ViewGeometry]:
        """data (B, C, *P) -> views (V*B, C, *Q) (view-major), their geometry."""
        crops, geometry = self.crop(data)
        return self.make_views(crops), geometry

    def crop(self, data: torch.Tensor) -> tuple[torch.Tensor, ViewGeometry]:
        """data (B, C, *P) -> the views' undisrupted crops with every channel (V*B, C, *Q), mirrored where
        ``flips`` says, and their geometry."""
        b, c = data.shape[:2]
        v, dev = self.num_views, data.device
        d = len(self.crop_size)
        flips = (torch.rand(v, b, d, device=dev) < (0.5 if self.config.flip_views else 0.0)) & self.can_flip_t
        low = flips.long() * self.flip_min_t  # offsets uniform in 0..steps, a flipped axis' in 1..steps
        offsets = low + (torch.rand(v, b, d, device=dev) * (self.shift_steps_t + 1 - low)).long()
        # one gather with broadcast index tensors copies every view at once (no per-view Python loop); a flipped
        # axis reads its crop backwards from off + S*(Q - 1), so that its voxel centres fall on the unflipped grid
        voxel_offsets = (offsets * self.strides_t).reshape(v * b, d)
        flat_flips = flips.reshape(v * b, d)
        index = [torch.arange(b, device=dev).repeat(v).view(-1, *[1] * (d + 1)),
                 torch.arange(c, device=dev).view(1, c, *[1] * d)]
        for axis, (q, s) in enumerate(zip(self.crop_size, self.strides)):
            shape = [v * b, 1] + [1] * d
            shape[2 + axis] = q
            steps = torch.arange(q, device=dev)
            steps = torch.where(flat_flips[:, axis, None], q - s - steps, steps)  # (V*B, q)
            index.append((voxel_offsets[:, axis].view(-1, 1) + steps).view(shape))
        return data[tuple(index)], ViewGeometry(offsets, flips, self.inside_image(data))

    def inside_image(self, data: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: patch bottleneck voxels of which at least half the input voxels are image, not padding.

        nnU-Net pads (and its rotation fills) with 0 in every channel; an image voxel is 0 in every channel
        almost never, except where nnU-Net's mask-for-normalisation set the background to 0, which is no
        image content either.
        """
        image = (data != 0).any(dim=1, keepdim=True).to(data.dtype)  # (B, 1, *P)
        pool = F.avg_pool3d if data.dim() == 5 else F.avg_pool2d
        return (pool(image, self.strides, self.strides) >= 0.5).flatten(1)  # (B, N)

    def make_views(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (V*B, C, *Q) -> views: intensity changes ('augment'), disruptions, then the channel masks.

        The masks come last so that removed channels are exactly 0, as a missing modality is at fine-tuning.
        """
        c = self.config
        n, channels = crops.shape[:2]
        views = crops
        if c.view_strategy == "augment":
            views = random_intensity(views, c.augment_gamma, c.augment_contrast, c.augment_brightness)
        views = low_resolution(views, c.low_resolution_probability, c.low_resolution_factor)
        views = gaussian_noise(views, c.noise_std)
        views = mask_cubes(views, c.mask_ratio, c.mask_block)
        if c.add_full_view and c.full_view_disruption > 0:
            views = self._disrupt_full_view(views)
        if c.view_strategy == "augment":
            return views  # every view keeps every channel: no mask to multiply by on every step
        masks = self.channel_masks(n // self.num_views, crops.device).reshape(n, channels)
        return views * masks.view(n, channels, *[1] * (crops.dim() - 2)).to(views.dtype)

    def _disrupt_full_view(self, views: torch.Tensor) -> torch.Tensor:
        """The full view (the last B of the view-major V*B) changed on its own: independent intensity changes,
        noise and masked cubes, so that it is not the partial views' exact pixels side by side."""
        s, b = self.config.full_view_disruption, views.shape[0] // self.num_views
        full = random_intensity(views[-b:], s, s, s)
        full = mask_cubes(gaussian_noise(full, s), s, self.config.mask_block)
        return torch.cat([views[:-b], full])

    def sample_locations(self, geometry: ViewGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> positions (B, M, d) in the patch's bottleneck grid, flat indices (V, B, M) into each view's
        bottleneck grid, inside (B, M) bool: the location lies inside the image. The M locations of a sample are distinct and seen by every view; with
        ``dense_inside_image`` they lie inside the image where the views' overlap has M such locations."""
        offsets, flips, inside = geometry
        v, b, d = offsets.shape
        dev = offsets.device
        grid = self.bottleneck_grid  # (N, d)
        lo = offsets.amax(dim=0)  # (B, d): overlap of all views
        hi = offsets.amin(dim=0) + self.view_size_t
        shared = ((grid[None] >= lo[:, None]) & (grid[None] < hi[:, None])).all(dim=-1)  # (B, N)
        scores = torch.rand(b, grid.shape[0], device=dev)
        if self.config.dense_inside_image:  # inside locations first, then the rest of the overlap
            scores = scores + inside.to(scores.dtype)
        scores = scores.masked_fill(~shared, -1.0)
        chosen = scores.topk(self.num_locations, dim=1).indices  # (B, M), shared by construction of M
        positions = grid[chosen]  # (B, M, d)
        local = positions[None] - offsets[:, :, None]  # (V, B, M, d)
        # crop's window: flipped bottleneck voxel j is centred on the patch's offsets + Q - 1 - j (module docstring)
        local = torch.where(flips[:, :, None], self.view_size_t - 1 - local, local)
        return positions, (local * self.flat_stride_t).sum(dim=-1), inside.gather(1, chosen)


class StageGrid(nn.Module):
    """Maps the dense locations of the bottleneck to an encoder stage above it, whose voxels are ``ratio`` times
    finer per axis (``dense_stages``).

    Views are shifted by whole bottleneck voxels, so every stage of every view stays aligned. Each location takes
    one of the ratio^d stage voxels inside its bottleneck voxel at random (stage voxels p*r .. p*r + r - 1 of
    bottleneck voxel p), the same one in every view. A flipped view has stage voxel j of its unflipped partner at
    Q_s - r - j (module docstring): its stage grid is the unflipped one moved by r - 1 stage voxels, so of the
    bottleneck voxel at a flipped view's index 0 (the view's highest in the patch) only the first stage voxel
    lies in that view; on such an axis the location takes that one.

    With PlainConvEncoder the partners' receptive fields then coincide at every stage. ResidualEncoder (BasicBlockD)
    adds to each downsampling block's strided 3x3 path a skip path, AvgPool(2, 2) then a 1x1 conv, centred on
    2j + 0.5 of the block's input, which a mirror moves to 2j - 0.5: its main path aligns exactly, the sum not.
    A mirror moves a receptive-field centre s*j + delta to s*j - delta, so partners lie 2*delta apart per flipped
    axis. Measured (centre of mass of |d features / d input| of the middle voxel of an input of 4 bottleneck
    voxels per axis, mirror-symmetric kernels, 5 stages, stride 16): |delta| < 2.5 input voxels at the bottleneck
    and the 2 stages above it, within the spread that the exactly aligned PlainConvEncoder shows in the same
    measure, so the residual is at most about 5 input voxels, against 15 with the view read backwards from its
    last voxel (test_residual_encoder_centres_are_off_by_at_most_a_few_voxels).
    """

    def __init__(self, view_bottleneck: Sequence[int], ratio: Sequence[int]):
        super().__init__()
        view_size = [q * r for q, r in zip(view_bottleneck, ratio)]
        d = len(view_size)
        self.register_buffer("ratio_t", torch.tensor(list(ratio)), persistent=False)
        self.register_buffer("view_bottleneck_t", torch.tensor(list(view_bottleneck)), persistent=False)
        self.register_buffer("view_size_t", torch.tensor(view_size), persistent=False)
        self.register_buffer("flat_stride_t", torch.tensor([math.prod(view_size[i + 1:]) for i in range(d)]),
                             persistent=False)

    def forward(self, positions: torch.Tensor, geometry: ViewGeometry) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, M, d) in the patch's bottleneck grid -> positions (B, M, d) float of the chosen stage voxels,
        in bottleneck voxels (so the exclusion radius keeps its meaning), and flat indices (V, B, M) into each view's
        grid at this stage."""
        offsets, flips, _ = geometry
        # the bottleneck voxel at a flipped view's index 0 holds only its first stage voxel in that view
        edge = (flips[:, :, None] & (positions[None] == offsets[:, :, None] + self.view_bottleneck_t - 1)).any(dim=0)
        choices = torch.where(edge, torch.ones_like(self.ratio_t), self.ratio_t)  # (B, M, d)
        within = (torch.rand(positions.shape, device=positions.device) * choices).long()
        fine = positions * self.ratio_t + within  # (B, M, d): the stage voxel in the patch
        local = fine[None] - (offsets * self.ratio_t)[:, :, None]  # (V, B, M, d)
        local = torch.where(flips[:, :, None], self.view_size_t - self.ratio_t - local, local)
        # a bottleneck voxel p covers stage voxels p*r .. p*r + r - 1, whose centre maps back to p
        return (fine.float() + 0.5) / self.ratio_t - 0.5, (local * self.flat_stride_t).sum(dim=-1)

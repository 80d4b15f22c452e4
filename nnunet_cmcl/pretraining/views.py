"""Modality views of one nnU-Net batch, built on the device.

A view is a sub-crop of the loaded patch in which the channels outside the view's modality subset
are set to 0 (the mean after nnU-Net's z-score). The channel count never changes, so the pretrained
network has the fine-tuning network's shapes. Each view is shifted by a random multiple of the
encoder's total stride, so bottleneck voxels of different views still line up, and (``flip_views``) mirrored
along random axes, with the correspondence of bottleneck voxels mapped. A CNN with zero padding knows where in
its input a voxel lies; with shifts alone the partner of a location sits at (nearly) the same place in every
view, so positives could be matched by position. Each dense stage draws its own fixed number of locations from
its own overlap of all views (``StageGrid``), inside the image first, and those outside are left out of the loss
(``dense_inside_image``): padding and background look alike in every view and every sample, so as anchors,
positives or negatives they teach nothing but the silhouette. Where the image lies comes from nnU-Net's own -1
marker in the segmentation (``outside.inside_image``), not from the intensities, which augmentation changes.

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
that view, and the r - 1 stage voxels below its lowest bottleneck voxel do: each stage's overlap of the views is
taken with these bounds (``overlap_bounds``). For PlainConvEncoder the partners' receptive fields
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
    inside: torch.Tensor  # (B, 1, *P) bool: the patch's voxels that are image (``outside.inside_image``)


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
        self.bottleneck_locations = self.stage_grid([1] * d, config.dense_locations)
        self.num_locations = self.bottleneck_locations.num_locations

    def stage_grid(self, ratio: Sequence[int], locations: int) -> "StageGrid":
        """The location sampler of the stage ``ratio`` times finer per axis than the bottleneck (1: the bottleneck),
        drawing ``locations`` per sample (fewer where the views' overlap at that stage offers fewer)."""
        flippable = [self.config.flip_views and m >= int(s > 1) for m, s in zip(self.shift_steps, self.strides)]
        return StageGrid(self.patch_bottleneck, self.view_bottleneck, self.strides, self.shift_steps, flippable,
                         ratio, locations, self.config.dense_inside_image)

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

    def forward(self, data: torch.Tensor, inside: torch.Tensor | None = None) -> tuple[torch.Tensor, ViewGeometry]:
        """data (B, C, *P), inside (B, 1, *P) bool or None -> views (V*B, C, *Q) (view-major), their geometry."""
        crops, geometry = self.crop(data, inside)
        return self.make_views(crops), geometry

    def crop(self, data: torch.Tensor, inside: torch.Tensor | None = None) -> tuple[torch.Tensor, ViewGeometry]:
        """data (B, C, *P) -> the views' undisrupted crops with every channel (V*B, C, *Q), mirrored where
        ``flips`` says, and their geometry. inside (B, 1, *P) bool: the patch's voxels that are image
        (``outside.inside_image``); None counts every voxel as image."""
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
        if inside is None:
            inside = torch.ones_like(data[:, :1], dtype=torch.bool)
        return data[tuple(index)], ViewGeometry(offsets, flips, inside)

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
        """The bottleneck's dense locations (``StageGrid`` of ratio 1): positions (B, M, d) float in the patch's
        bottleneck grid, flat indices (V, B, M) into each view's bottleneck grid, inside (B, M) bool."""
        return self.bottleneck_locations(geometry)


def overlap_bounds(offset: int, flipped: bool, ratio: int, view_size: int) -> tuple[int, int]:
    """First and last stage voxel (in the patch's grid ``ratio`` times finer than the bottleneck) that a view of
    bottleneck ``offset`` holds along one axis: a flipped view holds stage voxel p at index Q_s - r - (p - off*r)
    (module docstring), so its range lies r - 1 lower."""
    low = offset * ratio - (ratio - 1) * int(flipped)
    return low, low + view_size - 1


class StageGrid(nn.Module):
    """Samples the dense locations of one encoder stage, ``ratio`` times finer per axis than the bottleneck
    (ratio 1: the bottleneck itself), from that stage's own overlap of all views.

    Each sample takes ``locations`` distinct stage voxels (fewer where the overlap offers fewer in its worst
    case over shifts and flips, ``available``; a fixed number, so every shape is fixed) seen by every view, with
    ``inside_first`` those inside the image first: top-k of random scores plus 1 for a stage voxel of which at
    least half the input voxels are image. Where a sample's overlap has fewer of them, the rest lie outside and
    come back marked so (``CMCLLoss`` then leaves them out). Views are shifted by whole bottleneck voxels, so every
    stage of every view stays aligned. A flipped view holds stage voxel j of its unflipped partner at Q_s - r - j
    (module docstring): its stage grid is the unflipped one moved by r - 1 stage voxels, so of the bottleneck
    voxel at its index 0 (its highest in the patch) only the first stage voxel lies in it, while the r - 1 stage
    voxels below its first bottleneck voxel do (``overlap_bounds``).

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

    def __init__(self, patch_bottleneck: Sequence[int], view_bottleneck: Sequence[int], strides: Sequence[int],
                 shift_steps: Sequence[int], flippable: Sequence[bool], ratio: Sequence[int], locations: int,
                 inside_first: bool):
        super().__init__()
        d = len(view_bottleneck)
        view_size = [q * r for q, r in zip(view_bottleneck, ratio)]
        self.ratio = list(ratio)
        self.stage_strides = [s // r for s, r in zip(strides, ratio)]
        self.inside_first = inside_first
        # the worst case over each axis' offsets (0..m, a flipped axis 1..m) and flips of any two views
        worst = []
        for m, r, q, flip in zip(shift_steps, ratio, view_size, flippable):
            views = [overlap_bounds(o, False, r, q) for o in range(m + 1)]
            views += [overlap_bounds(o, True, r, q) for o in range(1, m + 1)] if flip else []
            worst.append(min(min(a[1], b[1]) - max(a[0], b[0]) + 1 for a in views for b in views))
        self.available = math.prod(worst)
        self.num_locations = min(locations, self.available)
        self.register_buffer("ratio_t", torch.tensor(self.ratio), persistent=False)
        self.register_buffer("view_size_t", torch.tensor(view_size), persistent=False)
        self.register_buffer("flat_stride_t", torch.tensor([math.prod(view_size[i + 1:]) for i in range(d)]),
                             persistent=False)
        grid = torch.meshgrid(*[torch.arange(p * r) for p, r in zip(patch_bottleneck, ratio)], indexing="ij")
        self.register_buffer("grid", torch.stack(grid, dim=-1).view(-1, d), persistent=False)  # (N_s, d)

    def inside(self, voxels: torch.Tensor) -> torch.Tensor:
        """voxels (B, 1, *P) bool -> (B, N_s) bool: the stage voxels of which at least half the input voxels
        (the stage stride's cell from the voxel's receptive-field centre on) are image."""
        pool = F.avg_pool3d if voxels.dim() == 5 else F.avg_pool2d
        return (pool(voxels.float(), self.stage_strides, self.stage_strides) >= 0.5).flatten(1)

    def forward(self, geometry: ViewGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> positions (B, M, d) float of the chosen stage voxels in bottleneck voxels of the patch (so the
        exclusion radius keeps its physical meaning), flat indices (V, B, M) into each view's grid at this stage,
        inside (B, M) bool."""
        offsets, flips, voxels = geometry
        b = offsets.shape[1]
        low = offsets * self.ratio_t - (self.ratio_t - 1) * flips.long()  # (V, B, d): overlap_bounds per view
        lo, hi = low.amax(dim=0), low.amin(dim=0) + self.view_size_t  # (B, d): overlap of all views, hi excluded
        grid = self.grid
        shared = ((grid[None] >= lo[:, None]) & (grid[None] < hi[:, None])).all(dim=-1)  # (B, N_s)
        inside = self.inside(voxels)
        scores = torch.rand(b, grid.shape[0], device=offsets.device)
        if self.inside_first:  # inside locations first, then the rest of the overlap
            scores = scores + inside.to(scores.dtype)
        # top-k of a fixed k: no data-dependent shape, and shared by construction of num_locations
        chosen = scores.masked_fill(~shared, -1.0).topk(self.num_locations, dim=1).indices  # (B, M)
        fine = grid[chosen]  # (B, M, d): the stage voxel in the patch
        local = fine[None] - (offsets * self.ratio_t)[:, :, None]  # (V, B, M, d)
        local = torch.where(flips[:, :, None], self.view_size_t - self.ratio_t - local, local)
        # a bottleneck voxel p covers stage voxels p*r .. p*r + r - 1, whose centre maps back to p
        positions = (fine.float() + 0.5) / self.ratio_t - 0.5
        return positions, (local * self.flat_stride_t).sum(dim=-1), inside.gather(1, chosen)

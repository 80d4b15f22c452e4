"""The disruptions of CMCL's views: masked cubes, noise, low resolution, intensity changes, one-modality views."""
from dataclasses import replace

import torch

from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.disruptions import gaussian_noise, low_resolution, mask_cubes, random_intensity
from nnunet_cmcl.pretraining.views import ViewSampler


def test_masked_cubes_are_zero_in_every_channel_and_the_rest_is_untouched():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 16, 16, 16) + 10  # no voxel is 0 before masking
    y = mask_cubes(x, ratio=0.5, block=4)
    zero = y == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # a cube is masked in every channel at once
    assert torch.equal(y[~zero], x[~zero])
    # (N, zb, zi, yb, yi, xb, xi) -> (N, zb, yb, xb, 64 voxels of the cube)
    cubes = zero[:, 0].reshape(8, 4, 4, 4, 4, 4, 4).permute(0, 1, 3, 5, 2, 4, 6).flatten(4)
    assert (cubes.all(-1) | ~cubes.any(-1)).all()  # whole 4^3 cubes, never parts of one
    assert 0.35 < cubes.all(-1).float().mean() < 0.65
    assert mask_cubes(torch.ones(2, 1, 7, 9, 5), 0.5, 4).shape == (2, 1, 7, 9, 5)  # cubes cut at the border
    assert mask_cubes(x, 0.0, 4) is x


def test_noise_reaches_every_voxel_with_a_strength_drawn_per_sample():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8, 8)
    y = gaussian_noise(x, max_std=0.5)
    std = y.flatten(1).std(dim=1)
    assert (y != 0).all()
    assert std.max() < 0.55 and std.max() > 0.4 and std.min() < 0.1  # U(0, 0.5) per sample
    assert gaussian_noise(x, 0.0) is x


def test_low_resolution_removes_detail_finer_than_its_factor_in_the_chosen_samples_only():
    torch.manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij")
    checkerboard = ((z + y + x) % 2 * 2 - 1).float()  # +-1: averages to 0 over every 2^3 block
    data = checkerboard.expand(32, 2, 8, 8, 8).clone()
    out = low_resolution(data, probability=0.5, factor=2)
    flattened = out.flatten(1).abs().amax(dim=1) < 1e-6
    untouched = (out == data).flatten(1).all(dim=1)
    assert torch.equal(flattened, ~untouched) and 0 < flattened.sum() < 32
    assert low_resolution(data, probability=1.0, factor=2).abs().amax() < 1e-6
    assert low_resolution(torch.randn(2, 1, 16, 12), 1.0, 2).shape == (2, 1, 16, 12)  # 2d configurations
    assert low_resolution(data, 0.0, 2) is data


def test_intensity_changes_keep_each_channels_voxel_order_and_differ_per_sample_and_channel():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 8, 8, 8)
    y = random_intensity(x, gamma=0.3, contrast=0.25, brightness=0.25)
    in_order_of_x = y.flatten(2).gather(2, x.flatten(2).argsort(dim=2))
    assert (in_order_of_x.diff(dim=2) >= 0).all()  # increasing: the anatomy is kept, its appearance changes
    mean_change = (y - x).flatten(2).mean(dim=2)
    assert mean_change.abs().min() > 1e-4 and len(set(mean_change.flatten().tolist())) == 12


def test_removed_modalities_stay_exactly_zero_while_kept_ones_are_disrupted():
    torch.manual_seed(0)
    config = replace(CMCLConfig(), noise_std=0.5, low_resolution_probability=0.5, mask_ratio=0.3, mask_block=4,
                     flip_views=False, add_full_view=False)
    sampler = ViewSampler([[0], [1]], 2, (32, 32, 32), (8, 8, 8), config)
    data = torch.randn(4, 2, 32, 32, 32) + 10
    crops, (offsets, _, _) = sampler.crop(data)
    for k in range(sampler.num_views):
        for i in range(4):
            z, y, x = (offsets[k, i] * 8).tolist()
            assert torch.equal(crops[k * 4 + i], data[i, :, z:z + 24, y:y + 24, x:x + 24])  # the clean target
    views = sampler.make_views(crops)
    kept = views.flatten(2).abs().amax(dim=2) > 0  # (V*B, C)
    assert kept.sum(dim=1).eq(1).all()  # two modalities, two views: one channel each, the other exactly 0
    changed = (views.flatten(2)[kept] - crops.flatten(2)[kept]).abs().amax(dim=1)
    assert (changed > 0.1).all()


def test_augment_views_of_one_modality_keep_the_channel_and_stay_aligned():
    torch.manual_seed(0)
    config = replace(CMCLConfig(), view_strategy="augment", add_full_view=False, augment_brightness=0.5,
                     flip_views=False)
    sampler = ViewSampler([[0]], 1, (32, 32, 32), (8, 8, 8), config)  # one modality: fine for 'augment'
    data = torch.randn(3, 1, 32, 32, 32)
    views, (offsets, _, _) = sampler(data)
    shifts = set()
    for k in range(2):
        for i in range(3):
            z, y, x = (offsets[k, i] * 8).tolist()
            difference = views[k * 3 + i] - data[i, :, z:z + 24, y:y + 24, x:x + 24]
            # the same voxels as the crop at the view's offset, brightness shifted
            assert torch.allclose(difference, difference.flatten()[0].expand_as(difference), atol=1e-5)
            shifts.add(round(difference.flatten()[0].item(), 5))
    assert len(shifts) == 6  # every view of every sample its own change

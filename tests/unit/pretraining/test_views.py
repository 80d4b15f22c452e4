from dataclasses import replace

import pytest
import torch

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.views import StageGrid, ViewSampler, modality_groups, total_strides

GROUPS4 = [[0], [1], [2], [3]]


def make_sampler(config=CMCLConfig(), groups=GROUPS4, patch=(32, 32, 32), strides=(8, 8, 8)):
    channels = sum(len(g) for g in groups)
    return ViewSampler(groups, channels, patch, strides, config)


def test_modality_groups_follow_channel_names():
    assert modality_groups({"0": "T1", "1": "T2", "2": "FLAIR"}) == [[0], [1], [2]]
    assert modality_groups({"1": "echo", "0": "T1", "2": "echo"}) == [[0], [1, 2]]
    assert total_strides([[1, 1, 1], [2, 2, 1], [2, 2, 2]]) == [4, 4, 2]


def test_views_are_shifted_stride_aligned_crops_with_channels_zeroed():
    torch.manual_seed(0)
    sampler = make_sampler(replace(CMCLConfig(), flip_views=False, add_full_view=False))
    data = torch.randn(3, 4, 32, 32, 32)
    views, (offsets, _, _) = sampler(data)
    v, b = sampler.num_views, 3
    assert views.shape == (v * b, 4, *sampler.crop_size)
    assert sampler.crop_size == [24, 24, 24] and sampler.shift_steps == [1, 1, 1]
    for k in range(v):
        for i in range(b):
            z, y, x = (offsets[k, i] * 8).tolist()
            crop = data[i, :, z:z + 24, y:y + 24, x:x + 24]
            view = views[k * b + i]
            kept = view.flatten(1).abs().sum(1) > 0
            assert torch.equal(view[kept], crop[kept])  # kept channels: exactly the shifted crop
            assert 1 <= kept.sum() <= 3  # a proper subset of the modalities


def test_partition_views_are_complementary():
    sampler = make_sampler(replace(CMCLConfig(), add_full_view=False))
    masks = sampler.channel_masks(64, torch.device("cpu"))  # (V, B, C)
    assert torch.equal(masks.sum(0), torch.ones(64, 4))  # every channel in exactly one view
    assert (masks.sum(2) >= 1).all()  # no empty view


def test_single_and_full_view_strategies():
    single = make_sampler(replace(CMCLConfig(), view_strategy="single", num_views=3, add_full_view=True))
    masks = single.channel_masks(32, torch.device("cpu"))
    assert masks.shape == (4, 32, 4)
    assert (masks[:3].sum(2) == 1).all()  # one modality a view
    assert (masks[:3].sum(0) <= 1).all()  # distinct modalities
    assert (masks[3] == 1).all()  # the all-channels view


def test_full_view_has_every_channel_and_is_no_copy_of_the_partial_views():
    torch.manual_seed(0)
    sampler = make_sampler(replace(CMCLConfig(), flip_views=False, mask_block=4))  # defaults: 2 partial + full
    assert sampler.num_views == 3
    data = torch.randn(16, 4, 32, 32, 32) + 3
    crops, _ = sampler.crop(data)
    views = sampler.make_views(crops)
    partial, full, full_crops = views[:32], views[32:], crops[32:]
    kept = partial.flatten(2).abs().amax(2) > 0
    assert torch.equal(partial.flatten(2)[kept], crops[:32].flatten(2)[kept])  # partial views: exact pixels
    cubes = full.unfold(2, 4, 4).unfold(3, 4, 4).unfold(4, 4, 4).abs().amax(dim=(-3, -2, -1)).amax(dim=1)
    masked = (cubes == 0).float().mean()
    assert 0.1 < masked < 0.5  # a fraction of up to 0.3 of its cubes, in every channel
    shown = full != 0
    assert (full[shown] == full_crops[shown]).float().mean() < 0.01  # every shown voxel changed: noise, intensity
    # yet the anatomy stays: each channel of the full view correlates with the crop's where shown
    corr = torch.corrcoef(torch.stack([full[shown], full_crops[shown]]))[0, 1]
    assert corr > 0.7


def test_multichannel_modalities_stay_together():
    sampler = make_sampler(groups=[[0, 2], [1]])
    masks = sampler.channel_masks(16, torch.device("cpu"))
    assert torch.equal(masks[..., 0], masks[..., 2])


def test_flipped_views_are_mirrored_crops():
    torch.manual_seed(0)
    sampler = make_sampler(replace(CMCLConfig(), view_strategy="single", num_views=4))
    data = torch.randn(8, 4, 32, 32, 32)
    crops, (offsets, flips, _) = sampler.crop(data)
    assert 0.3 < flips.float().mean() < 0.7
    for k in range(4):
        for i in range(8):
            z, y, x = (offsets[k, i] * 8).tolist()
            crop = data[i, :, z:z + 24, y:y + 24, x:x + 24]
            axes = [1 + a for a in range(3) if flips[k, i, a]]
            assert torch.equal(crops[k * 8 + i], crop.flip(axes) if axes else crop)


def decode(flat, q):
    return torch.stack([flat // (q * q), flat // q % q, flat % q], dim=-1)


@pytest.mark.parametrize("flip", [False, True])
def test_dense_locations_are_distinct_shared_and_decode_to_their_positions(flip):
    torch.manual_seed(1)
    sampler = make_sampler(replace(CMCLConfig(), dense_locations=5, flip_views=flip))
    _, geometry = sampler(torch.randn(4, 4, 32, 32, 32))
    positions, flat, _ = sampler.sample_locations(geometry)
    assert positions.shape == (4, 5, 3) and flat.shape == (sampler.num_views, 4, 5)
    q = sampler.view_bottleneck[0]  # 3
    local = decode(flat, q)
    assert ((local >= 0) & (local < q)).all()  # inside every view
    unflipped = torch.where(geometry.flips[:, :, None], q - 1 - local, local)
    assert torch.equal(unflipped + geometry.offsets[:, :, None], positions.expand(sampler.num_views, -1, -1, -1))
    for b in range(4):
        assert len({tuple(p) for p in positions[b].tolist()}) == 5


@pytest.mark.parametrize("flip", [False, True])
def test_stage_locations_see_the_same_voxels_in_every_view(flip):
    # a stage 2x finer than the bottleneck (stride 4 of 8): with each input voxel holding its coordinates, the
    # stage voxel a location picks must cover the same input voxels in every view, inside its bottleneck voxel
    torch.manual_seed(4)
    sampler = make_sampler(replace(CMCLConfig(), dense_locations=6, flip_views=flip), patch=(48, 48, 48))
    coordinates = torch.stack(torch.meshgrid(*[torch.arange(48.0)] * 3, indexing="ij"))  # (3, 48, 48, 48)
    data = torch.cat([coordinates, torch.ones(1, 48, 48, 48)])[None].repeat(2, 1, 1, 1, 1)
    crops, geometry = sampler.crop(data)
    positions, _, _ = sampler.sample_locations(geometry)
    stage_positions, flat = StageGrid(sampler.view_bottleneck, [2, 2, 2])(positions, geometry)
    assert ((stage_positions - positions).abs() < 0.5).all()  # inside the location's bottleneck voxel
    stage = torch.nn.functional.avg_pool3d(crops[:, :3], 4)  # (V*B, 3, 8, 8, 8): mean coordinate per stage voxel
    v = sampler.num_views
    seen = stage.flatten(2).gather(2, flat.reshape(v * 2, 1, -1).expand(-1, 3, -1)).view(v, 2, 3, -1)
    assert torch.equal(seen, seen[:1].expand_as(seen))  # the same input voxels in every view
    fine = (stage_positions + 0.5) * 2 - 0.5  # the stage voxel in the patch: it covers 4 input voxels per axis
    assert torch.allclose(seen[0].transpose(1, 2), fine * 4 + 1.5)


def test_partners_are_not_found_by_their_place_in_the_view():
    # a CNN with zero padding knows where in its input a voxel lies: with shifts alone a location's partner sits
    # within one bottleneck voxel of the same place; flipped views put it anywhere
    torch.manual_seed(2)
    sampler = make_sampler(replace(CMCLConfig(), dense_locations=8), patch=(64, 64, 64))  # 8^3 bottleneck
    _, geometry = sampler(torch.randn(64, 4, 64, 64, 64))
    _, flat, _ = sampler.sample_locations(geometry)
    local = decode(flat, sampler.view_bottleneck[0]).float()  # (V, B, M, 3)
    partner_distance = (local[0] - local[1]).abs().sum(-1).mean()
    random_distance = (local[0] - local[1].flatten(0, 1)[torch.randperm(64 * 8)].view(64, 8, 3)).abs().sum(-1).mean()
    assert partner_distance > 0.7 * random_distance
    unflipped = make_sampler(replace(CMCLConfig(), dense_locations=8, flip_views=False), patch=(64, 64, 64))
    _, geometry = unflipped(torch.randn(64, 4, 64, 64, 64))
    local = decode(unflipped.sample_locations(geometry)[1], unflipped.view_bottleneck[0]).float()
    assert (local[0] - local[1]).abs().amax() <= 1  # what the flips close


def test_dense_locations_lie_inside_the_image():
    torch.manual_seed(3)
    sampler = make_sampler(replace(CMCLConfig(), dense_locations=6), patch=(48, 48, 48))  # 6^3 bottleneck
    data = torch.randn(4, 4, 48, 48, 48)
    data[:, :, :, :, 24:] = 0  # nnU-Net's padding: 0 in every channel
    _, geometry = sampler(data)
    positions, _, inside = sampler.sample_locations(geometry)
    assert inside.all() and (positions[..., 2] < 3).all()
    anywhere = make_sampler(replace(CMCLConfig(), dense_locations=6, dense_inside_image=False), patch=(48, 48, 48))
    _, geometry = anywhere(data)
    positions, _, inside = anywhere.sample_locations(geometry)
    assert (positions[..., 2] >= 3).any() and not inside.all()  # what dense_inside_image closes


def test_bad_datasets_get_one_clear_error():
    with pytest.raises(CMCLInputError, match="at least 2 modalities.*nnUNetTrainerCMCL_Aug"):
        make_sampler(groups=[[0]])
    with pytest.raises(CMCLInputError, match="num_views=3"):
        make_sampler(replace(CMCLConfig(), num_views=3), groups=[[0], [1]])
    with pytest.raises(CMCLInputError, match="not divisible"):
        make_sampler(patch=(30, 32, 32))

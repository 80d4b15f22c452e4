from dataclasses import replace

import pytest
import torch

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.views import ViewSampler, modality_groups, total_strides

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
    sampler = make_sampler()
    data = torch.randn(3, 4, 32, 32, 32)
    views, offsets = sampler(data)
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
    sampler = make_sampler()
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


def test_multichannel_modalities_stay_together():
    sampler = make_sampler(groups=[[0, 2], [1]])
    masks = sampler.channel_masks(16, torch.device("cpu"))
    assert torch.equal(masks[..., 0], masks[..., 2])


def test_dense_locations_are_distinct_shared_and_decode_to_their_positions():
    torch.manual_seed(1)
    sampler = make_sampler(replace(CMCLConfig(), dense_locations=5))
    _, offsets = sampler(torch.randn(4, 4, 32, 32, 32))
    positions, flat = sampler.sample_locations(offsets)
    assert positions.shape == (4, 5, 3) and flat.shape == (sampler.num_views, 4, 5)
    q = sampler.view_bottleneck[0]  # 3
    local = torch.stack([flat // (q * q), flat // q % q, flat % q], dim=-1)
    assert torch.equal(local + offsets[:, :, None], positions.expand(sampler.num_views, -1, -1, -1))
    assert ((local >= 0) & (local < q)).all()  # inside every view
    for b in range(4):
        assert len({tuple(p) for p in positions[b].tolist()}) == 5


def test_bad_datasets_get_one_clear_error():
    with pytest.raises(CMCLInputError, match="at least 2 modalities.*nnUNetTrainerCMCL_Aug"):
        make_sampler(groups=[[0]])
    with pytest.raises(CMCLInputError, match="num_views=3"):
        make_sampler(replace(CMCLConfig(), num_views=3), groups=[[0], [1]])
    with pytest.raises(CMCLInputError, match="not divisible"):
        make_sampler(patch=(30, 32, 32))

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
    # a flipped axis reads its crop backwards from offset * 8 + 8 * (3 - 1): its window starts 8 - 1 voxels lower
    # than the unflipped one of the same offset, so its offsets are 1..shift_steps
    torch.manual_seed(0)
    sampler = make_sampler(replace(CMCLConfig(), view_strategy="single", num_views=4))
    data = torch.randn(8, 4, 32, 32, 32)
    crops, (offsets, flips, _) = sampler.crop(data)
    assert 0.3 < flips.float().mean() < 0.7
    assert (offsets[flips] == 1).all() and (offsets[~flips] == 0).any()
    for k in range(4):
        for i in range(8):
            z, y, x = (offsets[k, i] * 8 - 7 * flips[k, i]).tolist()
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


def decode_grid(flat, size):
    """flat indices (...) into a grid of ``size`` -> (..., d) per-axis indices."""
    out, rest = [], flat
    for n in reversed(size):
        out.append(rest % n)
        rest = rest // n
    return torch.stack(out[::-1], dim=-1)


def flatten_grid(local, size):
    flat = torch.zeros_like(local[..., 0])
    for axis, n in enumerate(size):
        flat = flat * n + local[..., axis]
    return flat


def gather_locations(features, flat, v, b):
    """features (V*B, F, *Q) and flat indices (V, B, M) -> (V, B, M, F)."""
    f = features.shape[1]
    seen = features.flatten(2).gather(2, flat.reshape(v * b, 1, -1).expand(-1, f, -1))
    return seen.view(v, b, f, -1).transpose(2, 3)


class DeltaEncoder(nn.Module):
    """nnU-Net's downsampling geometry and nothing else: per stage one 3-tap, padding-1 convolution of the
    stage's stride (stage 0: stride 1) with a centre (delta) kernel, so output voxel j of a stage of total stride
    s holds its input voxel s*j: the receptive-field centre of that voxel."""

    def __init__(self, strides):
        super().__init__()
        self.strides = [list(s) for s in strides]

    def forward(self, x):
        d, c = x.dim() - 2, x.shape[1]
        conv = F.conv3d if d == 3 else F.conv2d
        weight = torch.zeros(c, 1, *[3] * d, dtype=x.dtype)
        weight[(slice(None), 0) + (1,) * d] = 1
        out = []
        for s in self.strides:
            x = conv(x, weight, stride=s, padding=1, groups=c)
            out.append(x)
        return out


DELTA_CASES = {  # strides per stage, patch, max_shift_steps
    "3d": ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], (48, 48, 48), 1),
    "3d_anisotropic": ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2], [2, 2, 2]], (24, 96, 64), 2),
    "3d_unstrided_axis": ([[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2]], (5, 48, 40), 2),
    "3d_unshifted_axis": ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], (16, 48, 48), 1),
    "2d": ([[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]], (96, 64), 2),
}


@pytest.mark.parametrize("case", DELTA_CASES)
def test_partners_have_the_same_receptive_field_centre_at_every_stage(case):
    # every view gets the patch's coordinates as its input channels; through strided delta convolutions a sampled
    # location reads the patch coordinate of its receptive-field centre, which must be its partners' in every view,
    # at the bottleneck and at every stage above it
    encoder_strides, patch, steps = DELTA_CASES[case]
    torch.manual_seed(5)
    d, b = len(patch), 8
    groups = [[a] for a in range(d)]
    config = replace(CMCLConfig(), view_strategy="single", num_views=d, dense_locations=64, max_shift_steps=steps,
                     stage_locations=64)
    strides = total_strides(encoder_strides)
    sampler = ViewSampler(groups, d, patch, strides, config)
    coordinates = torch.stack(torch.meshgrid(*[torch.arange(float(p)) for p in patch], indexing="ij"))
    crops, geometry = sampler.crop(coordinates[None].repeat(b, *[1] * (d + 1)))
    offsets, flips, _ = geometry
    v = sampler.num_views
    can_flip = torch.tensor([m >= int(s > 1) for m, s in zip(sampler.shift_steps, strides)])
    assert flips.float().mean() > 0.2 and (flips <= can_flip).all()  # never where the flip cannot be aligned
    stages = DeltaEncoder(encoder_strides)(crops)
    positions, flat, _ = sampler.sample_locations(geometry)
    seen = gather_locations(stages[-1], flat, v, b)  # (V, B, M, d): the centres in patch coordinates
    assert torch.equal(seen, (positions * torch.tensor(strides)).float().expand(v, -1, -1, -1))
    for k in range(1, len(encoder_strides)):
        ratio = total_strides(encoder_strides[-k:])
        grid = sampler.stage_grid(ratio, 64)  # each stage draws its own locations from its own overlap
        stage_positions, stage_flat, _ = grid(geometry)
        assert stage_flat.shape == (v, b, min(64, grid.available))
        size = [q * r for q, r in zip(sampler.view_bottleneck, ratio)]
        local = decode_grid(stage_flat, size)
        assert ((local >= 0) & (local < torch.tensor(size))).all()  # inside every view
        seen = gather_locations(stages[-1 - k], stage_flat, v, b)
        assert torch.equal(seen, seen[:1].expand_as(seen))  # the same centre in every view
        # ... that of the stage voxel the positions name
        fine = ((stage_positions + 0.5) * torch.tensor(ratio) - 0.5).round()
        stage_stride = torch.tensor([s // r for s, r in zip(strides, ratio)])
        assert torch.equal(seen[0], fine * stage_stride)
        for i in range(b):  # distinct stage voxels
            assert len({tuple(p) for p in fine[i].tolist()}) == fine.shape[1]
        if any(r > 1 for r in ratio):  # every stage voxel of a cell is drawn, and the flipped edges too
            assert len({tuple(w) for w in (fine % torch.tensor(ratio)).view(-1, d).tolist()}) > 1
            flipped_edge = flips[:, :, None] & (local >= torch.tensor(size) - torch.tensor(ratio) + 1)
            assert flipped_edge.any()  # below a flipped view's lowest bottleneck voxel: in its view only at stages


def plain_conv_encoder(encoder_strides, features, residual=False):
    """nnU-Net's 3d encoder as its PlainConvUNet / ResidualEncoderUNet builds it (kernel 3, conv bias, instance
    norm, leaky ReLU), every conv kernel made mirror-symmetric."""
    from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
    n = len(encoder_strides)
    kwargs = dict(input_channels=2, n_stages=n, features_per_stage=features, conv_op=nn.Conv3d, kernel_sizes=3,
                  strides=encoder_strides, conv_bias=True, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  return_skips=True)
    if residual:
        encoder = ResidualEncoder(n_blocks_per_stage=[1, 3, 4, 6, 6, 6][:n], **kwargs)
    else:
        encoder = PlainConvEncoder(n_conv_per_stage=2, **kwargs)
    torch.manual_seed(6)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.Conv3d):
                w = module.weight
                flips = [dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r)]
                module.weight.copy_(sum(w.flip(dims) for dims in flips) / 8)
            if isinstance(module, nn.InstanceNorm3d):  # not the identity of a fresh init
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return encoder.eval()


def stage_locations(sampler, encoder_strides, geometry):
    """-> per stage, the bottleneck first: the stage voxels in the patch's stage grid (B, M, d), the flat indices
    into each view's stage grid (V, B, M) and the stage's ratio to the bottleneck."""
    positions, flat, _ = sampler.sample_locations(geometry)
    out = [(positions.long(), flat, [1] * positions.shape[-1])]
    for k in range(1, len(encoder_strides)):
        ratio = total_strides(encoder_strides[-k:])
        stage_positions, stage_flat, _ = sampler.stage_grid(ratio, 24)(geometry)
        fine = ((stage_positions + 0.5) * torch.tensor(ratio) - 0.5).round().long()
        out.append((fine, stage_flat, ratio))
    return out


def test_flipped_views_of_nnunets_plain_encoder_match_their_unflipped_reading():
    # with mirror-symmetric kernels a plain nnU-Net encoder is exactly mirror-equivariant along an axis of S*k + 1
    # voxels (S its total stride there): each stride-2, padding-1 conv maps 2m + 1 voxels to m + 1 with centres
    # 0, 2, .., 2m, which the mirror maps onto themselves, zero padding and instance norm included. Along a flipped
    # axis the first S*(Q - 1) + 1 voxels of a view are exactly the mirrored first S*(Q - 1) + 1 voxels of the
    # unflipped view of the same offsets; cut there, the flipped view's features at the sampler's index must equal
    # the unflipped reading's at the location's own index, at the bottleneck and at every stage above it
    encoder_strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    strides, patch, b = total_strides(encoder_strides), (32, 64, 64), 2
    encoder = plain_conv_encoder(encoder_strides, [4, 6, 8, 8, 8])
    torch.manual_seed(7)
    sampler = ViewSampler([[0], [1]], 2, patch, strides, replace(CMCLConfig(), dense_locations=24))
    data = torch.randn(b, 2, *patch)
    crops, geometry = sampler.crop(data)
    offsets, flips, _ = geometry
    locations = stage_locations(sampler, encoder_strides, geometry)
    compared = 0
    for k in range(sampler.num_views):
        for i in range(b):
            flipped = flips[k, i]
            if not flipped.any():
                continue
            compared += 1
            lengths = [s * (q - 1) + 1 if f else s * q for s, q, f in zip(strides, sampler.view_bottleneck, flipped)]
            corner = (offsets[k, i] * torch.tensor(strides)).tolist()
            window = tuple(slice(c, c + n) for c, n in zip(corner, lengths))
            with torch.no_grad():
                ours = encoder(crops[k * b + i, :, :lengths[0], :lengths[1], :lengths[2]][None])
                reference = encoder(data[i, :, window[0], window[1], window[2]][None])
            for stage, (fine, flat, ratio) in enumerate(locations):
                size = [q * r for q, r in zip(sampler.view_bottleneck, ratio)]
                short = [n - r + 1 if f else n for n, r, f in zip(size, ratio, flipped.tolist())]
                local = decode_grid(flat[k, i], size)
                # the cut view ends at the last symmetric voxel: the r - 1 stage voxels a flipped view holds below
                # its lowest bottleneck voxel lie beyond it (the centre test above checks those)
                cut = ((local >= 0) & (local < torch.tensor(short))).all(dim=-1)
                assert cut.sum() >= 4
                local = local[cut]
                own = fine[i][cut] - offsets[k, i] * torch.tensor(ratio)  # the index in the unflipped reading
                seen = ours[-1 - stage].flatten(2)[0][:, flatten_grid(local, short)]
                expected = reference[-1 - stage].flatten(2)[0][:, flatten_grid(own, short)]
                assert seen.abs().mean() > 0.1  # no vanishing features
                assert torch.allclose(seen, expected, atol=1e-4, rtol=1e-4), (k, i, stage)
    assert compared >= 3


def test_residual_encoder_centres_are_off_by_at_most_a_few_voxels():
    # ResidualEncoder's downsampling blocks add a skip path (AvgPool(2, 2), a 1x1 conv) centred on 2j + 0.5 to their
    # strided 3x3 path centred on 2j: no integer shift mirrors it exactly. A mirror moves the receptive-field
    # centre of mass of output voxel j from s*j + delta to s*j - delta, so partners of a flipped axis lie 2*delta
    # apart. Measured here on an input of S*4 voxels per axis, the voxel at its middle (centre of mass of
    # |d features / d input| over 8 inputs, mirror-symmetric kernels, norms and nonlinearities as built):
    # |delta| < 2.5 input voxels at the bottleneck and the 2 stages above it at S = 16 (the plain encoder, exact by
    # the test above, gives the same spread here: the bound is this measure's noise, not a found offset); the
    # view read backwards from its last voxel put partners S - 1 = 15 voxels apart
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
    encoder_strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    torch.manual_seed(100)  # before the weights: the measure depends on them, not on which tests ran first
    encoder = plain_conv_encoder(encoder_strides, [2, 4, 4, 4, 4], residual=True)
    assert isinstance(encoder, ResidualEncoder)
    x = torch.randn(8, 2, 64, 64, 64, requires_grad=True)
    features = encoder(x)
    grid = torch.stack(torch.meshgrid(*[torch.arange(64.0, dtype=torch.float64)] * 3, indexing="ij"))
    for stage, r in enumerate([1, 2, 4]):
        j = 2 * r  # output voxel j of stride 16 / r: centred on input voxel 32
        g, = torch.autograd.grad(features[-1 - stage][:, :, j, j, j].sum(), x, retain_graph=True)
        w = g.abs().sum((0, 1)).double()
        delta = (w * grid).flatten(1).sum(1) / w.sum() - 32
        assert (delta.abs() < 2.5).all(), (stage, delta)


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
    data = torch.randn(4, 4, 48, 48, 48)  # augmented: no exact zeros, also where nnU-Net padded
    inside = torch.ones(4, 1, 48, 48, 48, dtype=torch.bool)
    inside[..., 24:] = False  # the segmentation's -1 marker: the image ends at x = 24
    _, geometry = sampler(data, inside)
    positions, _, marked = sampler.sample_locations(geometry)
    assert marked.all() and (positions[..., 2] < 3).all()
    grid = sampler.stage_grid([4, 4, 4], 64)  # a stage's own locations, inside at its own resolution
    positions, _, marked = grid(geometry)
    assert marked.all() and (positions[..., 2] < 3 - 0.5 + 0.5 / 4).all()
    anywhere = make_sampler(replace(CMCLConfig(), dense_locations=6, dense_inside_image=False), patch=(48, 48, 48))
    _, geometry = anywhere(data, inside)
    positions, _, marked = anywhere.sample_locations(geometry)
    assert (positions[..., 2] >= 3).any() and not marked.all()  # what dense_inside_image closes


def test_a_stage_voxel_is_inside_when_at_least_half_its_cell_is_image():
    sampler = make_sampler(patch=(32, 32, 32))  # stride 8: a stage of ratio 2 has cells of 4^3 voxels
    voxels = torch.zeros(1, 1, 32, 32, 32, dtype=torch.bool)
    voxels[..., 0:4, 0:4, 0:2] = True  # half of cell (0, 0, 0)
    voxels[..., 0:4, 0:4, 4:5] = True  # a quarter of cell (0, 0, 1)
    inside = sampler.stage_grid([2, 2, 2], 8).inside(voxels).view(8, 8, 8)
    assert inside[0, 0, 0] and not inside[0, 0, 1] and inside.sum() == 1


def test_locations_beyond_the_inside_part_of_the_overlap_are_marked_outside():
    # 8 inside stage voxels per sample in the overlap, 64 drawn: the rest is drawn outside and marked so
    torch.manual_seed(8)
    sampler = make_sampler(replace(CMCLConfig(), flip_views=False), patch=(64, 64, 64))  # 8^3 bottleneck
    inside = torch.zeros(3, 1, 64, 64, 64, dtype=torch.bool)
    inside[:, :, 24:32, 24:32, 24:32] = True  # 2^3 stage voxels of stride 4
    _, geometry = sampler(torch.randn(3, 4, 64, 64, 64), inside)
    grid = sampler.stage_grid([2, 2, 2], 64)
    positions, _, marked = grid(geometry)
    assert marked.shape == (3, 64) and (marked.sum(dim=1) == 8).all()
    fine = ((positions + 0.5) * 2 - 0.5).round()
    assert ((fine[marked] >= 6) & (fine[marked] < 8)).all()
    _, geometry = sampler(torch.randn(3, 4, 64, 64, 64), torch.zeros_like(inside))
    assert not grid(geometry)[2].any()  # nothing inside: every location marked outside, the shapes unchanged


def test_each_stage_samples_its_own_locations_and_knows_its_worst_case_overlap():
    # nnU-Net's 3d_fullres plans of a BraTS-sized dataset: patch 128^3, strides [1, 2, 2, 2, 2, 2], bottleneck 4^3;
    # the views' overlap holds at least 2^3 bottleneck voxels, 4^3 voxels of stride 16 and 8^3 of stride 8
    torch.manual_seed(9)
    encoder_strides = [[1, 1, 1]] + [[2, 2, 2]] * 5
    sampler = ViewSampler([[0], [1], [2], [3]], 4, (128, 128, 128), total_strides(encoder_strides), CMCLConfig())
    grids = [sampler.stage_grid(total_strides(encoder_strides[-k:]), 64) for k in (1, 2)]
    assert sampler.num_locations == 8 and [g.available for g in grids] == [64, 512]
    _, geometry = sampler.crop(torch.randn(2, 4, 8, 8, 8).repeat_interleave(16, 2).repeat_interleave(16, 3)
                               .repeat_interleave(16, 4))
    positions, _, _ = grids[1](geometry)
    assert positions.shape == (2, 64, 3)
    # 64 stage voxels spread over many bottleneck voxels, not one in each of the 8 bottleneck locations
    cells = [{tuple(p) for p in positions[i].round().long().tolist()} for i in range(2)]
    assert all(len(c) > 8 for c in cells)


@pytest.mark.parametrize("ratio", [1, 2, 4])
def test_worst_case_overlap_is_the_fewest_shared_stage_voxels(ratio):
    # brute force: a stage voxel is shared when its index lies inside every view (flipped: Q_s - r - j)
    torch.manual_seed(10)
    sampler = make_sampler(replace(CMCLConfig(), view_strategy="single", num_views=4, add_full_view=False),
                           patch=(64, 48), strides=(16, 16))
    grid = sampler.stage_grid([ratio, ratio], 1)
    _, geometry = sampler.crop(torch.randn(4000, 4, 64, 48))
    offsets, flips, _ = geometry
    size = torch.tensor([q * ratio for q in sampler.view_bottleneck])
    local = grid.grid[None, None] - (offsets * ratio)[:, :, None]  # (V, B, N, d)
    local = torch.where(flips[:, :, None], size - ratio - local, local)
    shared = ((local >= 0) & (local < size)).all(dim=-1).all(dim=0).sum(dim=1)  # (B,)
    assert int(shared.min()) == grid.available


def test_bad_datasets_get_one_clear_error():
    with pytest.raises(CMCLInputError, match="at least 2 modalities.*nnUNetTrainerCMCL_Aug"):
        make_sampler(groups=[[0]])
    with pytest.raises(CMCLInputError, match="num_views=3"):
        make_sampler(replace(CMCLConfig(), num_views=3), groups=[[0], [1]])
    with pytest.raises(CMCLInputError, match="not divisible"):
        make_sampler(patch=(30, 32, 32))

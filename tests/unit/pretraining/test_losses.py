import math

import pytest
import torch
import torch.nn.functional as F

from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.heads import DenseHead, GlobalHead
from nnunet_cmcl.pretraining.losses import CMCLLoss, multi_positive_info_nce, near_pairs
from nnunet_cmcl.pretraining.queue import KeyQueue, MomentumEncoder
from nnunet_cmcl.pretraining.metrics import (alignment, normalised_std, other_samples_of_same_case, retrieval_top1,
                                             uniformity)


def reference_info_nce(anchors, candidates, anchor_index, t, near=None, case_ids=None, queue=None):
    """Straightforward loop over every anchor and positive, written from the definition. queue: (keys, their
    case ids), negatives of every anchor whose case differs."""
    v_, b_, m_, _ = anchors.shape
    n_ = candidates.shape[1]
    case_ids = list(range(n_)) if case_ids is None else case_ids.tolist()
    total, count = 0.0, 0
    for v in range(v_):
        for b in range(b_):
            own = int(anchor_index[b])
            for m in range(m_):
                a = anchors[v, b, m].double()
                negatives = []
                for w in range(v_):
                    for n in range(n_):
                        for mm in range(m_):
                            other_sample = case_ids[n] != case_ids[own]
                            far_in_own = near is not None and n == own and mm != m and not bool(near[b, m, mm])
                            if other_sample or far_in_own:
                                negatives.append(torch.dot(a, candidates[w, n, mm].double()) / t)
                if queue is not None:
                    negatives += [torch.dot(a, k.double()) / t for k, kc in zip(*queue) if kc != case_ids[own]]
                for w in range(v_):
                    if w == v:
                        continue
                    p = torch.dot(a, candidates[w, own, m].double()) / t
                    denominator = torch.exp(p) + sum(torch.exp(x) for x in negatives)
                    total += -p + torch.log(denominator)
                    count += 1
    return total / count


def random_embeddings(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


@pytest.mark.parametrize("views", [2, 3])
def test_global_loss_equals_reference(views):
    candidates = random_embeddings(views, 5, 1, 8)  # 5 samples over all "ranks"
    index = torch.tensor([2, 3])  # this rank holds samples 2 and 3
    anchors = candidates[:, index]
    ours = multi_positive_info_nce(anchors, candidates, index, 0.2)
    assert ours.item() == pytest.approx(reference_info_nce(anchors, candidates, index, 0.2).item(), rel=1e-5)


@pytest.mark.parametrize("views", [2, 3])
def test_dense_loss_equals_reference(views):
    candidates = random_embeddings(views, 3, 4, 8, seed=1)
    index = torch.tensor([0, 1, 2])
    positions = torch.tensor([[[0, 0, 0], [1, 0, 0], [3, 0, 0], [3, 1, 0]]] * 3)
    near = near_pairs(positions, 1.5)
    ours = multi_positive_info_nce(candidates, candidates, index, 0.1, near)
    assert ours.item() == pytest.approx(reference_info_nce(candidates, candidates, index, 0.1, near).item(), rel=1e-5)


@pytest.mark.parametrize("views", [2, 3])
def test_samples_of_the_same_case_are_no_negatives(views):
    candidates = random_embeddings(views, 4, 3, 8, seed=2)
    index = torch.tensor([0, 1, 2, 3])
    cases = torch.tensor([7, 9, 7, 5])  # samples 0 and 2 are patches of one case
    near = near_pairs(torch.tensor([[[0, 0, 0], [1, 0, 0], [4, 0, 0]]] * 4), 1.5)
    ours = multi_positive_info_nce(candidates, candidates, index, 0.1, near, cases)
    reference = reference_info_nce(candidates, candidates, index, 0.1, near, cases)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert ours.item() != pytest.approx(multi_positive_info_nce(candidates, candidates, index, 0.1, near).item())


@pytest.mark.parametrize("views", [2, 3])
def test_locations_outside_the_image_are_no_anchors_positives_or_negatives(views):
    # the last 2 of 6 locations of every sample lie outside: the loss is that of the first 4 alone
    candidates = random_embeddings(views, 3, 6, 8, seed=11)
    index = torch.arange(3)
    positions = torch.tensor([[[0, 0, 0], [2, 0, 0], [4, 0, 0], [6, 0, 0], [1, 0, 0], [3, 0, 0]]] * 3)
    inside = torch.tensor([[True] * 4 + [False] * 2] * 3)
    ours = multi_positive_info_nce(candidates, candidates, index, 0.1, near_pairs(positions, 1.5),
                                   valid=(inside, inside))
    kept = candidates[:, :, :4]
    reference = reference_info_nce(kept, kept, index, 0.1, near_pairs(positions[:, :4], 1.5))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    # CMCLLoss takes the mask from 'inside' (dense_inside_image, the default); off, every location counts
    out = {"dense": candidates, "positions": positions, "inside": inside}
    assert CMCLLoss(CMCLConfig())(out)["loss_dense"].item() == pytest.approx(reference.item(), rel=1e-5)
    unmasked = CMCLLoss(CMCLConfig(dense_inside_image=False))(out)["loss_dense"].item()
    assert unmasked != pytest.approx(reference.item(), rel=1e-3)


@pytest.mark.parametrize("views", [2, 3])
def test_bounded_candidates_take_negatives_from_the_anchors_group_only(views):
    # 6 samples of 3 locations; at most 3 * views * 2 candidates: groups of 2 samples ({0, 1}, {2, 3}, {4, 5}).
    # This rank holds samples 1..4, so its first anchor is the second of its group
    candidates = random_embeddings(views, 6, 3, 8, seed=14)
    near = near_pairs(torch.tensor([[[0, 0, 0], [1, 0, 0], [3, 0, 0]]] * 6), 1.5)
    index = torch.arange(1, 5)
    ours = multi_positive_info_nce(candidates[:, 1:5], candidates, index, 0.1, near[1:5],
                                   max_candidates=3 * views * 2, anchor_start=1)
    total, count = 0.0, 0
    for first, anchors in ((0, [1]), (2, [2, 3]), (4, [4])):
        group = candidates[:, first:first + 2]
        local = torch.tensor(anchors) - first
        mean = reference_info_nce(group[:, local], group, local, 0.1, near[anchors])
        total, count = total + mean * len(anchors), count + len(anchors)
    assert ours.item() == pytest.approx((total / count).item(), rel=1e-5)
    # a bound the batch does not reach changes nothing
    whole = multi_positive_info_nce(candidates[:, 1:5], candidates, index, 0.1, near[1:5])
    assert multi_positive_info_nce(candidates[:, 1:5], candidates, index, 0.1, near[1:5],
                                   max_candidates=6 * 3 * views, anchor_start=1).item() == whole.item()
    assert ours.item() != pytest.approx(whole.item(), rel=1e-3)


def test_a_sample_without_inside_locations_contributes_nothing():
    candidates = random_embeddings(3, 3, 4, 8, seed=12)
    positions = torch.tensor([[[0, 0, 0], [2, 0, 0], [4, 0, 0], [6, 0, 0]]] * 3)
    inside = torch.tensor([[True] * 4, [False] * 4, [True] * 4])
    ours = multi_positive_info_nce(candidates, candidates, torch.arange(3), 0.1, near_pairs(positions, 1.5),
                                   valid=(inside, inside))
    kept = candidates[:, [0, 2]]
    reference = reference_info_nce(kept, kept, torch.arange(2), 0.1, near_pairs(positions[[0, 2]], 1.5))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_a_batch_without_inside_locations_gives_zero_loss_with_a_gradient_path():
    features = random_embeddings(3, 2, 4, 8, seed=13).requires_grad_()
    out = {"dense": features, "positions": torch.zeros(2, 4, 3), "inside": torch.zeros(2, 4, dtype=torch.bool),
           "dense_stage1": features * 1.0, "positions_stage1": torch.zeros(2, 4, 3),
           "inside_stage1": torch.zeros(2, 4, dtype=torch.bool)}
    losses = CMCLLoss(CMCLConfig())(out)
    assert losses["loss"].item() == 0.0 and losses["loss"].requires_grad
    losses["loss"].backward()
    assert torch.equal(features.grad, torch.zeros_like(features))  # zeros, not NaN


def test_near_pairs_marks_exactly_the_pairs_within_radius():
    positions = torch.tensor([[[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [3, 0, 0]]])
    near = near_pairs(positions, 1.5)[0]
    # distances from location 0: 0, 1, 1.41, 1.73, 3
    assert near[0].tolist() == [True, True, True, False, False]
    assert torch.equal(near, near.T)
    assert near.diagonal().all()


def test_exclusion_radius_removes_same_sample_negatives():
    # one sample, two locations: with both inside the radius nothing is a negative, so each term is
    # -p + log(exp(p)) = 0; far apart, each location is the other's negative and the loss is positive
    emb = random_embeddings(2, 1, 2, 8, seed=3)
    index = torch.tensor([0])
    close = near_pairs(torch.tensor([[[0, 0, 0], [1, 0, 0]]]), 1.5)
    far = near_pairs(torch.tensor([[[0, 0, 0], [4, 0, 0]]]), 1.5)
    assert multi_positive_info_nce(emb, emb, index, 0.1, close).item() == pytest.approx(0.0, abs=1e-6)
    assert multi_positive_info_nce(emb, emb, index, 0.1, far).item() > 0.01


def test_aligned_embeddings_give_lower_loss_than_random():
    base = random_embeddings(1, 16, 1, 32, seed=4)
    aligned = base.expand(2, -1, -1, -1).contiguous()
    shuffled = random_embeddings(2, 16, 1, 32, seed=5)
    index = torch.arange(16)
    assert multi_positive_info_nce(aligned, aligned, index, 0.1) < multi_positive_info_nce(shuffled, shuffled, index, 0.1) - 1.0


def test_loss_and_gradients_finite_under_bf16_autocast():
    torch.manual_seed(0)
    features = torch.randn(4, 16, 3, 3, 3, requires_grad=True)  # (V*B, F, *S) with V = 2, B = 2
    global_head, dense_head = GlobalHead(16, 32, 8), DenseHead(16, 32, 8)
    flat_index = torch.randint(0, 27, (4, 5))
    positions = torch.randint(0, 3, (2, 5, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = {"global": global_head(features).view(2, 2, -1),
               "dense": dense_head(features, flat_index).view(2, 2, 5, -1), "positions": positions}
        losses = CMCLLoss(CMCLConfig(weight_global=1.0))(out)  # both terms
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [features.grad] + [p.grad for p in [*global_head.parameters(), *dense_head.parameters()]]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_total_is_weighted_sum_and_zero_weight_terms_are_absent():
    out = {"global": random_embeddings(2, 3, 8, seed=6)}
    losses = CMCLLoss(CMCLConfig(weight_global=0.5))(out)
    assert set(losses) == {"loss_global", "loss"}
    assert losses["loss"].item() == pytest.approx(0.5 * losses["loss_global"].item())


def test_metrics_on_known_geometry():
    z = torch.eye(4)
    assert retrieval_top1(z, z) == 1.0
    assert retrieval_top1(z, z.roll(1, dims=0)) == 0.0
    # key 1 is query 0's nearest, but it is another patch of query 0's case: left out, query 0 finds itself
    keys = F.normalize(torch.stack([z[0] + z[2], z[1] + 2 * z[0], z[2], z[3]]), dim=1)
    assert retrieval_top1(z, keys) == 0.75
    assert retrieval_top1(z, keys, other_samples_of_same_case(torch.tensor([0, 0, 1, 2]), torch.arange(4))) == 1.0
    assert alignment(z, z) == 0.0
    assert alignment(z, z.roll(1, dims=0)) == pytest.approx(2.0)
    # all pairs of orthonormal vectors are at squared distance 2
    assert uniformity(z) == pytest.approx(-4.0)
    collapsed = torch.ones(6, 4)
    assert normalised_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert normalised_std(random_embeddings(2000, 16, seed=7)) == pytest.approx(1.0, abs=0.1)
    assert math.isfinite(uniformity(collapsed)) and uniformity(collapsed) == pytest.approx(0.0, abs=1e-6)


def test_exclusion_radius_is_physical_on_anisotropic_data():
    # bottleneck voxels of 3 x 1 x 1 mm: a neighbour one voxel along z is 3 finest-axis voxels away
    loss = CMCLLoss(CMCLConfig(dense_exclusion_radius=1.5), bottleneck_spacing=[12.0, 4.0, 4.0])
    positions = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    near = near_pairs(positions * loss.position_scale, loss.exclusion_radius)[0]
    assert near[0, 2] and not near[0, 1]
    assert near_pairs(positions, 1.5)[0, 0, 1]  # in voxel units both neighbours would be near


def test_queue_negatives_equal_reference_and_same_case_keys_are_masked():
    candidates = random_embeddings(3, 4, 1, 8, seed=7)
    index, cases = torch.tensor([0, 1]), torch.tensor([10, 11, 12, 10])  # sample 3 is another patch of case 10
    keys, key_cases = random_embeddings(6, 8, seed=8), torch.tensor([10, 11, 13, 13, 12, 11])
    filled = torch.tensor([True, True, True, True, True, False])  # the last slot was never written
    loss = CMCLLoss(CMCLConfig(temperature=0.2, weight_global=1.0, weight_dense=0.0, dense_stages=0))
    ours = loss({"global": candidates[:, index, 0]}, cases[index], (keys, key_cases, filled))["loss_global"]
    # the loss gathers case ids over ranks; here this "rank" holds samples 0 and 1 of a world of 4 samples
    reference = reference_info_nce(candidates[:, index], candidates[:, index], torch.arange(2), 0.2,
                                   case_ids=cases[index], queue=(keys[:5], key_cases[:5].tolist()))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    without = loss({"global": candidates[:, index, 0]}, cases[index])["loss_global"]
    assert ours > without  # more negatives
    nothing_usable = (keys, key_cases, torch.zeros(6, dtype=torch.bool))
    assert loss({"global": candidates[:, index, 0]}, cases[index], nothing_usable)["loss_global"].item() == \
        pytest.approx(without.item(), rel=1e-6)


def test_key_queue_is_a_ring_and_momentum_follows_the_online_encoder():
    queue = KeyQueue(4, 2)
    queue.push(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    queue.push(2 * torch.ones(3, 2), torch.tensor([4, 5, 6]))  # wraps: slot 3, then 0 and 1
    assert queue.cases.tolist() == [5, 6, 3, 4] and int(queue.pointer) == 2 and bool(queue.filled.all())
    encoder, head = torch.nn.Conv3d(1, 2, 1), GlobalHead(2, 4, 3)
    momentum = MomentumEncoder(encoder, head, momentum=0.9)
    with torch.no_grad():
        encoder.weight.add_(1.0)
        head.centre.fill_(0.5)
    before = momentum.encoder.weight.clone()
    momentum.update(encoder, head)
    assert torch.allclose(momentum.encoder.weight, 0.9 * before + 0.1 * encoder.weight)
    assert torch.equal(momentum.head.centre, head.centre) and not momentum.training
    assert all(not p.requires_grad for p in momentum.parameters())

"""Two CPU processes (gloo): the gathered CMCL loss and gradients equal one process on the whole batch, with queue
negatives and locations outside the image, and the key queue stays the same on every rank."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.losses import CMCLLoss
from nnunet_cmcl.pretraining.queue import KeyQueue

WORLD = 2
V, B, M, D = 2, 3, 4, 8  # per-rank batch B


def make_inputs():
    g = torch.Generator().manual_seed(0)
    global_ = F.normalize(torch.randn(V, WORLD * B, D, generator=g), dim=-1)
    dense = F.normalize(torch.randn(V, WORLD * B, M, D, generator=g), dim=-1)
    positions = torch.randint(0, 3, (WORLD * B, M, 3), generator=g)
    cases = torch.tensor([11, 12, 13, 11, 14, 15])  # samples 0 and 3, on different ranks, share a case
    # dense locations outside the image, as many on each rank (each rank's loss is a mean over its own inside ones)
    inside = torch.ones(WORLD * B, M, dtype=torch.bool)
    inside[[0, 1, 4, 5], [1, 3, 0, 2]] = False
    return global_, dense, positions, cases, inside


def queue_negatives():
    """A queue as every rank holds it: keys of earlier steps, one from case 11 (masked for samples of case 11)."""
    g = torch.Generator().manual_seed(5)
    keys = F.normalize(torch.randn(5, D, generator=g), dim=-1)
    return keys, torch.tensor([11, 20, 21, 22, 23]), torch.tensor([True, True, True, True, False])


def losses_and_grads(global_, dense, positions, cases, inside):
    global_, dense = global_.clone().requires_grad_(), dense.clone().requires_grad_()
    loss = CMCLLoss(CMCLConfig(temperature=0.1, weight_global=1.0, weight_dense=0.5, dense_exclusion_radius=1.5))
    losses = loss({"global": global_, "dense": dense, "positions": positions, "inside": inside}, cases,
                  queue_negatives())
    losses["loss"].backward()
    return {k: v.item() for k, v in losses.items()}, global_.grad, dense.grad


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        global_, dense, positions, cases, inside = make_inputs()
        part = slice(rank * B, (rank + 1) * B)
        losses, g_grad, d_grad = losses_and_grads(global_[:, part], dense[:, part], positions[part], cases[part],
                                                  inside[part])
        queue = KeyQueue(8, D)
        queue.push(global_[0, part], cases[part])  # every rank pushes its own keys; all ranks get all of them
        torch.save((rank, losses, g_grad, d_grad, queue.state_dict()), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process(tmp_path):
    single_losses, single_g, single_d = losses_and_grads(*make_inputs())
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for key in single_losses:  # DDP averages: the mean of the ranks' losses is the single-process loss
        assert sum(r[1][key] for r in results) / WORLD == pytest.approx(single_losses[key], rel=1e-5)
    # each rank's gradient sums every rank's loss through the gather; DDP's averaging divides by WORLD
    g = torch.cat([r[2] for r in results], dim=1) / WORLD
    d = torch.cat([r[3] for r in results], dim=1) / WORLD
    assert torch.allclose(g, single_g, atol=1e-6) and torch.allclose(d, single_d, atol=1e-6)
    # the key queue: equal on both ranks, and equal to one process pushing the whole batch
    single_queue = KeyQueue(8, D)
    single_queue.push(make_inputs()[0][0], make_inputs()[3])
    for r in results:
        for key, value in single_queue.state_dict().items():
            assert torch.allclose(r[4][key].float(), value.float()), key


def validation_outputs():
    """Three validation steps of the whole batch (both ranks' samples): dense (S, V, 2B, M, D), inside, cases."""
    g = torch.Generator().manual_seed(3)
    dense = F.normalize(torch.randn(3, V, WORLD * B, M, D, generator=g), dim=-1)
    inside = torch.rand(3, WORLD * B, M, generator=g) < 0.7
    cases = torch.randint(10, 13, (3, WORLD * B), generator=g)  # cases shared across ranks too
    return dense, inside, cases


def metrics_worker(rank, port, out_dir):
    from nnunet_cmcl.pretraining.metrics import dense_validation_metrics, global_validation_metrics

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        dense, inside, cases = validation_outputs()
        part = slice(rank * B, (rank + 1) * B)
        result = (dense_validation_metrics(dense[:, :, part], inside[:, part], cases[:, part]),
                  global_validation_metrics(dense[:, :, part, 0].transpose(0, 1).flatten(1, 2),
                                            cases[:, part].flatten()))
        torch.save(result, os.path.join(out_dir, f"metrics{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_validation_metrics_of_two_ranks_equal_one_process(tmp_path):
    # the dense retrieval (and so checkpoint_best.pth) must not depend on the GPU count: each step's retrieval runs
    # over both ranks' samples, as one process sees them
    from nnunet_cmcl.pretraining.metrics import dense_validation_metrics, global_validation_metrics

    dense, inside, cases = validation_outputs()
    single = dense_validation_metrics(dense, inside, cases)
    # the global metrics gather every rank's samples of the epoch (in another order: the metrics do not depend on it)
    single_global = global_validation_metrics(dense[:, :, :, 0].transpose(0, 1).flatten(1, 2), cases.flatten())
    mp.start_processes(metrics_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    for rank in range(WORLD):
        ranked_dense, ranked_global = torch.load(tmp_path / f"metrics{rank}.pt", weights_only=False)
        assert ranked_dense == pytest.approx(single, rel=1e-5), rank
        assert ranked_global == pytest.approx(single_global, rel=1e-5), rank
    # per rank alone, the retrieval would have had half the candidates
    halves = [dense_validation_metrics(dense[:, :, p], inside[:, p], cases[:, p])["retrieval_top1"]
              for p in (slice(0, B), slice(B, 2 * B))]
    assert sum(halves) / WORLD != pytest.approx(single["retrieval_top1"])


def bounded_losses_and_grads(dense, positions, cases, inside, bound=V * M * 2):
    """The dense term alone with groups of 2 samples (V * M * 2 candidates), which straddle the ranks' halves."""
    dense = dense.clone().requires_grad_()
    config = CMCLConfig(temperature=0.1, weight_global=0.0, weight_dense=1.0, dense_exclusion_radius=1.5,
                        dense_max_candidates=bound)
    loss = CMCLLoss(config)({"dense": dense, "positions": positions, "inside": inside}, cases)["loss"]
    loss.backward()
    return loss.item(), dense.grad


def bounded_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        _, dense, positions, cases, inside = make_inputs()
        part = slice(rank * B, (rank + 1) * B)
        torch.save(bounded_losses_and_grads(dense[:, part], positions[part], cases[part], inside[part]),
                   os.path.join(out_dir, f"bounded{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_bounded_candidates_cut_the_same_groups_on_every_rank(tmp_path):
    # groups {0, 1}, {2, 3}, {4, 5} of the global batch: rank 0 holds 0-2, rank 1 holds 3-5, so group {2, 3} has an
    # anchor on each rank and every rank must find its anchors' group without asking the device
    _, dense, positions, cases, inside = make_inputs()
    single_loss, single_grad = bounded_losses_and_grads(dense, positions, cases, inside)
    mp.start_processes(bounded_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    results = [torch.load(tmp_path / f"bounded{r}.pt", weights_only=False) for r in range(WORLD)]
    assert sum(r[0] for r in results) / WORLD == pytest.approx(single_loss, rel=1e-5)
    assert torch.allclose(torch.cat([r[1] for r in results], dim=1) / WORLD, single_grad, atol=1e-6)
    assert single_loss != pytest.approx(bounded_losses_and_grads(dense, positions, cases, inside, 0)[0], rel=1e-3)

"""Where a rank runs (nnunet_cmcl/launch.py) and the torchrun entry's own checks (nnunet_cmcl/train.py), without
nnU-Net's commands: the device rule, the one-line refusals, and the DDP wrapper made again after requires_grad
changed, with two gloo processes."""
import argparse
import os
import socket
import weakref
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.launch import (batch_split_problem, ddp_device_ids, input_digests, inputs_mismatch, rank_device,
                                rewrap_ddp, wrap_ddp)
from nnunet_cmcl.train import build_parser, check_arguments, torchrun_world

WORLD = 2


def test_a_rank_takes_its_local_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")  # e.g. global rank 7, the fourth GPU of the second node
    assert rank_device(torch.device("cuda")) == torch.device("cuda", 3)
    assert ddp_device_ids(torch.device("cuda", 3)) == [3]
    assert rank_device(torch.device("cpu")) == torch.device("cpu")
    assert ddp_device_ids(torch.device("cpu")) is None  # DDP refuses device ids for a CPU module


def test_torchrun_world_reads_torchruns_variables(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_world() == (0, 1, 1)  # no torchrun: one process
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert torchrun_world() == (2, 8, 4)


def test_the_batch_must_split_evenly():
    assert batch_split_problem(4, 2, "T", "3d_fullres", "nnUNetPlans") is None
    problem = batch_split_problem(6, 4, "nnUNetTrainerCMCL", "3d_fullres", "nnUNetPlans_CMCL")
    assert "the batch of 6 (3d_fullres of nnUNetPlans_CMCL) does not split evenly over 4 ranks" in problem
    assert "nnunet-cmcl pretrain-plans -d DATASET -c 3d_fullres -tr TRAINER -num_gpus 4" in problem
    assert "\n" not in problem


def test_a_rank_with_other_plans_or_cases_is_named():
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {"batch_size": 2}}}
    dataset = {"channel_names": {"0": "T1", "1": "T2"}}
    cases = ["a", "b", "c"]
    first = input_digests(plans, "3d_fullres", dataset, cases)
    assert inputs_mismatch([("n0", first), ("n0", dict(first)), ("n1", dict(first))]) is None
    other_plans = input_digests({**plans, "plans_name": "other"}, "3d_fullres", dataset, cases)
    message = inputs_mismatch([("n0", first), ("n0", first), ("n1", other_plans), ("n2", other_plans)])
    assert message.startswith("rank 2 (host n1) (and 1 rank(s) more) reads other plans than rank 0 (host n0)")
    assert "nnUNet_preprocessed" in message
    other_config = input_digests(plans, "2d", dataset, cases)  # the configuration is part of the plans' digest
    assert "reads other plans" in inputs_mismatch([("n0", first), ("n1", other_config)])
    fewer = input_digests(plans, "3d_fullres", dataset, cases[:2])
    assert "other preprocessed cases (2 against 3)" in inputs_mismatch([("n0", first), ("n1", fewer)])
    channels = input_digests(plans, "3d_fullres", {"channel_names": {"0": "T1"}}, cases)
    assert "reads other dataset.json than" in inputs_mismatch([("n0", first), ("n1", channels)])


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["501", "3d_fullres", "0", *argv])


@pytest.mark.parametrize("argv, expected", [
    (("--c", "--val"), "--c and --val exclude each other"),
    (("--val_best", "--disable_checkpointing"), "--val_best needs checkpoint_best.pth"),
    (("--c", "-pretrained_weights", "x.pth"), "drop -pretrained_weights"),
])
def test_nnunets_argument_checks_are_one_line_refusals(argv, expected):
    with pytest.raises(CMCLInputError, match=expected):
        check_arguments(args(*argv))
    check_arguments(args("--c"))  # alone each is fine


def test_the_arguments_are_nnunetv2_trains():
    a = args("-tr", "nnUNetTrainerCMCL", "-p", "nnUNetPlans_CMCL", "-pretrained_weights", "w.pth", "--npz",
             "-device", "cpu")
    assert (a.tr, a.p, a.pretrained_weights, a.npz, a.device, a.fold) == \
        ("nnUNetTrainerCMCL", "nnUNetPlans_CMCL", "w.pth", True, "cpu", "0")


# ---------------------------------------------------------------- the DDP wrapper made again, two gloo processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))


def rank_input(rank: int) -> torch.Tensor:
    return torch.arange(8, dtype=torch.float).view(2, 4) * (rank + 1)


def rewrap_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        module = network()
        trainer = SimpleNamespace(network=wrap_ddp(module, torch.device("cpu")), device=torch.device("cpu"))
        module[0].requires_grad_(False)  # the frozen encoder of fine-tuning
        rewrap_ddp(trainer)
        frozen = weakref.ref(trainer.network)
        module[0].requires_grad_(True)  # unfrozen
        rewrap_ddp(trainer)
        reductions = []

        def counting(state, bucket):
            reductions.append(bucket.index())
            return allreduce_hook(state, bucket)

        trainer.network.register_comm_hook(None, counting)
        trainer.network(rank_input(rank)).sum().backward()
        torch.save({"frozen_wrapper_alive": frozen() is not None, "reductions": reductions,
                    "grads": [p.grad for p in module.parameters()]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_new_wrapper_after_unfreezing_reduces_every_gradient_once(tmp_path):
    mp.start_processes(rewrap_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    local = []  # each rank's own gradient, as one process computes it
    for rank in range(WORLD):
        module = network()
        module(rank_input(rank)).sum().backward()
        local.append([p.grad for p in module.parameters()])
    assert not torch.equal(local[0][0], local[1][0])  # so an unreduced first layer would show
    mean = [(a + b) / WORLD for a, b in zip(*local)]
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert not result["frozen_wrapper_alive"]  # its reducer, and the gradient hooks it holds, are gone
        assert result["reductions"] == [0]  # one bucket, reduced once, by the new wrapper
        for got, expected in zip(result["grads"], mean):  # the unfrozen layer's gradient too
            assert torch.allclose(got, expected, atol=1e-6)

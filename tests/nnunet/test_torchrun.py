"""Training beyond one machine: two torchrun agents on 127.0.0.1, one gloo process each, as two nodes would run
``torchrun --nnodes 2 --node-rank 0|1 ... -m nnunet_cmcl.train ... -device cpu``; the trainers of
tests/ext_trainers/nnUNetTrainer_torchrun_test.py save what each rank holds under ``<fold>/ranks/``.

No GPU here: NCCL and ``cuda:LOCAL_RANK`` are not run by these tests, the gloo path is.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join

from conftest import console_script

FOLDER = "Dataset501_CMCLPhantom"
RANKS_OF_NNUNET = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def env(phantom_env, tmp_path) -> dict:
    """phantom_env with its own nnUNet_results, batches drawn in the main process, one thread per process."""
    results = tmp_path / "results"
    results.mkdir()
    out = {k: v for k, v in phantom_env.items() if k not in RANKS_OF_NNUNET}
    return {**out, "nnUNet_results": str(results), "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], env: dict, node_env: tuple[dict, dict] = ({}, {}), timeout: int = 400):
    """Two torchrun agents (node ranks 0 and 1) of one gloo process each; their (returncode, output) pairs."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(n),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "nnunet_cmcl.train", "501", "3d_fullres", *args, "-device", "cpu"],
                              env={**env, **node_env[n]}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in (0, 1)]
    try:
        return [(p.returncode, out) for p in procs for out, _ in [p.communicate(timeout=timeout)]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def fold_folder(env: dict, trainer: str, fold: str = "all", plans: str = "nnUNetPlans") -> str:
    return join(env["nnUNet_results"], FOLDER, f"{trainer}__{plans}__3d_fullres", f"fold_{fold}")


def load_rank(folder: str, tag: str, rank: int) -> dict:
    return torch.load(join(folder, "ranks", f"{tag}_rank{rank}.pt"))


def flat(state: dict, prefix: str = "") -> torch.Tensor:
    return torch.cat([v.float().flatten() for k, v in sorted(state.items()) if k.startswith(prefix)])


def same(a: dict, b: dict, prefix: str = "") -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_two_nodes_train_what_one_process_trains_on_the_whole_batch(env, tmp_path):
    """The same CMCL run in one process (the plans' batch of 2) and on two nodes (1 sample each).

    nnU-Net's loader draws other samples on every rank, and the views draw their shifts, flips and locations per
    rank, so two real runs never see the same data. The trainer here draws neither (nnUNetTrainerCMCL_fixedBatch:
    fixed global batches split by rank, views with nothing random) and steps plain SGD, so its first update is
    the gradient: the DDP run's cross-rank gather, batch split, gradient mean and device placement must give the
    single process's, to float rounding (6e-6 of the update measured), where a rank that missed the others'
    negatives or gradients would be off by a large part of it. Later steps are compared loosely: this network's
    gradient is not smooth in its weights on random data (weights changed by 1e-8 of their size change it by
    5e-4, by 1e-6 by 5e-3, in one process), so the rounding of step 1 grows to about 1e-2 of step 2's update."""
    trainer = "nnUNetTrainerCMCL_fixedBatch"
    single_env = {**env, "nnUNet_results": str(tmp_path / "single")}
    os.makedirs(single_env["nnUNet_results"])
    single = subprocess.run([console_script("nnunet-cmcl"), "train", "501", "3d_fullres", "all", "-tr", trainer,
                             "-device", "cpu"], env=single_env, capture_output=True, text=True, timeout=400)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    ranks = two_nodes(["all", "-tr", trainer], env)
    assert [rc for rc, _ in ranks] == [0, 0], ranks[0][1][-3000:] + ranks[1][1][-3000:]

    one, two = fold_folder(single_env, trainer), fold_folder(env, trainer)
    start = load_rank(one, "start", 0)
    assert same(load_rank(two, "start", 0), start) and same(load_rank(two, "start", 1), start)
    for tag, tolerance in (("step1", 1e-4), ("step2", 2e-2)):
        single_step, rank0, rank1 = load_rank(one, tag, 0), load_rank(two, tag, 0), load_rank(two, tag, 1)
        assert same(rank0, rank1), tag  # DDP keeps the ranks identical
        update = (flat(single_step) - flat(start)).norm()
        assert update > 0.05, tag
        assert (flat(rank0) - flat(single_step)).norm() < tolerance * update, tag
    logged = [torch.load(join(f, "checkpoint_final.pth"), weights_only=False)["logging"] for f in (one, two)]
    assert logged[1]["train_losses"][0] == pytest.approx(logged[0]["train_losses"][0], rel=1e-6)  # before any update
    for key in ("train_losses", "val_losses"):
        assert logged[1][key] == pytest.approx(logged[0][key], rel=1e-4), key
    logs = glob.glob(join(two, "training_log_*.txt"))
    assert len(logs) == 1 and not glob.glob(join(two, "*.tmp"))  # rank 0 alone writes
    log = open(logs[0]).read()
    assert "distributed: world size 2 (gloo), batch 1 per rank, global batch 2" in log


def test_a_run_killed_on_one_node_continues_with_c_on_both(env):
    trainer = "nnUNetTrainerCMCL_ddpResume"  # 2 epochs, a checkpoint after each
    killed = two_nodes(["all", "-tr", trainer], env, ({"CMCL_TEST_RANK1_DIES_AFTER_EPOCH": "0"},) * 2)
    assert all(rc != 0 for rc, _ in killed), [out[-2000:] for _, out in killed]
    folder = fold_folder(env, trainer)
    assert not os.path.exists(join(folder, "checkpoint_final.pth"))
    assert torch.load(join(folder, "checkpoint_latest.pth"), weights_only=False)["current_epoch"] == 1

    resumed = two_nodes(["all", "-tr", trainer, "--c"], env)
    assert [rc for rc, _ in resumed] == [0, 0], resumed[0][1][-3000:] + resumed[1][1][-3000:]
    final = torch.load(join(folder, "checkpoint_final.pth"), weights_only=False)
    assert final["current_epoch"] == 2 and len(final["logging"]["train_losses"]) == 2
    assert "Epoch 0\n" not in resumed[0][1] and "Epoch 1\n" in resumed[0][1]  # it went on from epoch 1


def private_preprocessed(env: dict, root: str, change=None, plans_name: str = "nnUNetPlans") -> str:
    """A copy of dataset 501's preprocessed folder under root, its plans changed by ``change`` and saved as
    ``plans_name``; the nnUNet_preprocessed to use."""
    target = join(root, FOLDER)
    shutil.copytree(join(env["nnUNet_preprocessed"], FOLDER), target)
    with open(join(target, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    if change is not None:
        change(plans)
    plans["plans_name"] = plans_name
    with open(join(target, plans_name + ".json"), "w") as f:
        json.dump(plans, f)
    return root


def test_refusals_before_training(env, tmp_path):
    """Each in one line, on both nodes, before any epoch: a batch that does not split over the ranks (for every
    trainer of the package, here the baseline's), and a node whose plans differ from rank 0's."""
    def batch_of_3(plans):
        plans["configurations"]["3d_fullres"]["batch_size"] = 3

    odd = {"nnUNet_preprocessed": private_preprocessed(env, str(tmp_path / "odd"), batch_of_3, "nnUNetPlans_b3")}
    refused = two_nodes(["0", "-tr", "nnUNetTrainerSeeded", "-p", "nnUNetPlans_b3"], {**env, **odd})
    for rc, out in refused:
        assert rc != 0 and "the batch of 3 (3d_fullres of nnUNetPlans_b3) does not split evenly over 2 ranks" in out
        assert "nnunet-cmcl pretrain-plans -d DATASET -c 3d_fullres -tr TRAINER -num_gpus 2" in out
        assert "Epoch 0" not in out

    def other_batch_dice(plans):
        plans["configurations"]["3d_fullres"]["batch_dice"] = not plans["configurations"]["3d_fullres"]["batch_dice"]

    other = {"nnUNet_preprocessed": private_preprocessed(env, str(tmp_path / "other"), other_batch_dice)}
    refused = two_nodes(["0", "-tr", "nnUNetTrainerSeeded"], env, ({}, other))
    for rc, out in refused:
        assert rc != 0 and f"rank 1 (host {socket.gethostname()}) reads other plans than rank 0" in out
        assert "Epoch 0" not in out


def test_finetuning_with_a_frozen_then_unfrozen_encoder(env):
    """Epoch 0 trains the decoder alone, epoch 1 the whole network, each under a new DDP wrapper: the encoder
    must not move in epoch 0, must move in epoch 1 and stay the same on both ranks (its gradients all-reduced by
    the new wrapper; a wrapper kept from epoch 0 would leave them unreduced and the ranks apart), then nnU-Net's
    final validation runs on both ranks, rank 0 summarising it."""
    trainer = "nnUNetTrainerCMCLFinetune_ddpFreeze"
    ranks = two_nodes(["0", "-tr", trainer], env)
    assert [rc for rc, _ in ranks] == [0, 0], ranks[0][1][-3000:] + ranks[1][1][-3000:]
    folder = fold_folder(env, trainer, "0")
    for rank in (0, 1):
        epoch0, epoch1, end = (load_rank(folder, tag, rank) for tag in ("epoch0", "epoch1", "end"))
        assert same(epoch0, epoch1, "encoder.") and not same(epoch0, epoch1, "decoder.stages")
        assert not same(epoch1, end, "encoder.")
    assert same(load_rank(folder, "end", 0), load_rank(folder, "end", 1))
    log = ranks[0][1]
    assert "encoder frozen from epoch 0" in log and "encoder trainable from epoch 1" in log
    with open(join(folder, "validation", "summary.json")) as f:
        assert len(json.load(f)["metric_per_case"]) == 2  # one case predicted on each rank


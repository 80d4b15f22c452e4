"""``nnUNetv2_train`` for ranks that torchrun started, on one machine or several:

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HEAD:29500 \\
        -m nnunet_cmcl.train DATASET CONFIGURATION FOLD -tr TRAINER [-p PLANS] [--c] ...

(``nnunet-cmcl train`` is the same.) nnU-Net's ``-num_gpus`` spawns its ranks on this machine only. Here torchrun
has started them and set RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous (MASTER_ADDR/PORT); this module joins the
process group (NCCL on ``cuda:LOCAL_RANK``, gloo with ``-device cpu``), then does what nnU-Net's ``run_ddp`` does,
with nnU-Net's own functions: ``get_trainer_from_args``, ``maybe_load_checkpoint``, ``run_training``, the final
validation. The trainer puts itself on its rank's device (``launch.RankPlacement``). Without torchrun (WORLD_SIZE
unset or 1) it is nnU-Net's ``run_training`` with one process, as ``nnUNetv2_train`` runs it. docs/multinode.md
has a SLURM example and what must be shared.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
from typing import TYPE_CHECKING

from nnunet_cmcl.errors import CMCLInputError

if TYPE_CHECKING:
    import torch

# torch and nnU-Net are imported where they are used: `nnunet-cmcl` builds this parser for every command
DEVICES = ("cuda", "cpu", "mps")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """nnUNetv2_train's arguments and spellings, without -num_gpus (torchrun's --nproc-per-node says it)."""
    p.add_argument("dataset_name_or_id", help="dataset name or id")
    p.add_argument("configuration", help="configuration, e.g. 3d_fullres")
    p.add_argument("fold", help="fold (0-4, a fold of splits_final.json, or 'all')")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-pretrained_weights", default=None, help="checkpoint to start from (nnU-Net's loader)")
    p.add_argument("--npz", action="store_true", help="save the final validation's softmax as npz too")
    p.add_argument("--c", action="store_true", help="continue from the fold's latest checkpoint (on every rank)")
    p.add_argument("--val", action="store_true", help="only run the final validation (training must be finished)")
    p.add_argument("--val_best", action="store_true", help="validate with checkpoint_best instead of the final one")
    p.add_argument("--disable_checkpointing", action="store_true", help="write no checkpoints")
    p.add_argument("-device", default="cuda", choices=DEVICES,
                   help="cuda (NCCL, one GPU per rank: cuda:LOCAL_RANK) or cpu (gloo); default cuda")


def torchrun_world() -> tuple[int, int, int]:
    """(LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE) from torchrun's environment (RANK and the rendezvous are read by
    init_process_group); one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("LOCAL_RANK", "0")), world, int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))


def _fold(fold: str):
    if fold == "all":
        return fold
    try:
        return int(fold)
    except ValueError:
        raise CMCLInputError(f"fold {fold!r} is neither 'all' nor a number; give a fold of splits_final.json") from None


def _set_threads(device: torch.device, ranks_here: int) -> None:
    import torch

    if device.type == "cpu":  # nnU-Net takes every core for its one process; here the ranks of a machine share them
        torch.set_num_threads(max(1, multiprocessing.cpu_count() // ranks_here))
    elif device.type == "cuda":  # as nnU-Net: more threads do not help a GPU run
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def check_arguments(args: argparse.Namespace) -> None:
    """nnU-Net's own argument checks (asserts there), as one-line refusals before any work."""
    if args.c and args.val:
        raise CMCLInputError("--c and --val exclude each other: --c continues a training, --val only validates")
    if args.val_best and args.disable_checkpointing:
        raise CMCLInputError("--val_best needs checkpoint_best.pth: drop --disable_checkpointing")
    if args.c and args.pretrained_weights:
        raise CMCLInputError("--c continues from the fold's own checkpoint: drop -pretrained_weights, which only "
                             "starts a training")


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    check_arguments(args)
    here, world, ranks_here = torchrun_world()
    device = torch.device(args.device)
    _set_threads(device, ranks_here)
    if world <= 1:
        from nnunetv2.run.run_training import run_training

        run_training(args.dataset_name_or_id, args.configuration, args.fold, args.tr, args.p, args.pretrained_weights,
                     1, args.npz, args.c, args.val, args.disable_checkpointing, args.val_best, device=device)
        return 0
    _check_distributed(args, device, here)
    if device.type == "cuda":
        torch.cuda.set_device(here)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # env:// (torchrun's variables)
    try:
        _train_distributed(args, device, ranks_here)
    finally:
        dist.destroy_process_group()
    return 0


def _check_distributed(args: argparse.Namespace, device: torch.device, here: int) -> None:
    """What fails later or on one rank only, refused here on every rank alike."""
    import torch

    if device.type == "mps":
        raise CMCLInputError("-device mps runs one process: DDP needs cuda (NCCL) or cpu (gloo)")
    if device.type == "cuda" and here >= torch.cuda.device_count():
        raise CMCLInputError(f"LOCAL_RANK {here} on {socket.gethostname()} has no GPU ({torch.cuda.device_count()} "
                             f"visible): give torchrun --nproc-per-node at most the GPU count, or -device cpu")
    if args.pretrained_weights and not args.val and not torch.cuda.is_available():
        # nnU-Net's load_pretrained_weights maps the file to cuda:<rank> whenever a process group exists
        raise CMCLInputError("-pretrained_weights under torchrun needs CUDA: nnU-Net's load_pretrained_weights puts "
                             "the file on cuda:<rank> in a process group; fine-tune on GPUs, or in one process "
                             "(without torchrun) on the CPU")


def _train_distributed(args: argparse.Namespace, device: torch.device, ranks_here: int) -> None:
    """nnU-Net's run_ddp, with this rank's device and a check that every rank continues from the same epoch."""
    import torch.distributed as dist
    from batchgenerators.utilities.file_and_folder_operations import join
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    from torch.backends import cudnn

    from nnunet_cmcl.dist import broadcast_from_rank0
    from nnunet_cmcl.launch import RankPlacement

    trainer = get_trainer_from_args(args.dataset_name_or_id, args.configuration, _fold(args.fold), args.tr, args.p,
                                    args.c, device=device)
    if not isinstance(trainer, RankPlacement) and (device.type != "cuda" or dist.get_world_size() != ranks_here):
        raise CMCLInputError(
            f"{args.tr} is not a trainer of nnunet-cmcl: nnU-Net's own trainers put rank r on cuda:r, which is wrong "
            f"beyond one machine and on the CPU; use nnUNetTrainerSeeded (nnU-Net's default trainer plus the fold's "
            f"seed), add nnunet_cmcl.seeding.SeededTraining to its bases, or run nnUNetv2_train -num_gpus on one "
            f"machine")
    if args.disable_checkpointing:
        trainer.disable_checkpointing = True
    maybe_load_checkpoint(trainer, args.c, args.val, None)
    if args.pretrained_weights and not args.val:
        # as maybe_load_checkpoint does, but on rank 0 alone: nnU-Net's loader maps the file to cuda:<global rank>,
        # which a second node lacks; rank 0 is cuda:0 on its node, and its weights go to every rank
        if not trainer.was_initialized:
            trainer.initialize()
        if dist.get_rank() == 0:
            load_pretrained_weights(trainer.network, args.pretrained_weights, verbose=True)
        broadcast_from_rank0(trainer.network.module)
    check_same_epoch(trainer.current_epoch, args.c)
    if device.type == "cuda":
        cudnn.deterministic = False
        cudnn.benchmark = True
    if not args.val:
        trainer.run_training()
    if args.val_best:
        trainer.load_checkpoint(join(trainer.output_folder, "checkpoint_best.pth"))
    trainer.perform_actual_validation(args.npz)


def check_same_epoch(epoch: int, continuing: bool) -> None:
    """Refuses, on every rank, ranks that start from different epochs: with --c each rank reads the fold's
    checkpoint from its own nnUNet_results, which must then be rank 0's (a shared filesystem)."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (socket.gethostname(), epoch))
    host0, epoch0 = gathered[0]
    for rank, (host, other) in enumerate(gathered):
        if other != epoch0:
            reason = "--c: " if continuing else ""
            raise CMCLInputError(f"{reason}rank {rank} (host {host}) starts at epoch {other}, rank 0 (host {host0}) at "
                                 f"epoch {epoch0}: every rank must read rank 0's checkpoint, so nnUNet_results must "
                                 f"be a shared filesystem (or hold a copy of rank 0's fold folder on every node)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nnunet_cmcl.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CMCLInputError as e:
        if os.environ.get("NNUNET_CMCL_DEBUG"):
            raise
        print(f"nnunet-cmcl train (rank {os.environ.get('RANK', '0')}): error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Where each DDP rank of a trainer runs, whoever started the ranks: nnU-Net's ``-num_gpus`` (one machine) or
torchrun (``python -m nnunet_cmcl.train``, any number of machines, GPUs or CPUs).

nnU-Net's trainer takes a rank's global rank for its GPU: ``cuda:<rank>`` and ``DDP(device_ids=[rank])``. That
holds on one machine only: on the second of two 4-GPU nodes rank 4 has no cuda:4, and a CPU rank (gloo) takes no
device ids at all. ``RankPlacement``, which every trainer of the package has through ``SeededTraining``, puts a
rank on ``cuda:LOCAL_RANK`` (or the CPU) and wraps DDP with that; ``self.local_rank`` stays nnU-Net's global
rank, which its ``== 0`` checks, batch split and validation split need. It also refuses, in one line and on
every rank at once, a batch that does not split evenly over the ranks and a rank whose plans or data differ
from rank 0's.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_cmcl.errors import CMCLInputError


def process_group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    """This process's index on its machine: torchrun's LOCAL_RANK; nnU-Net's -num_gpus sets none and runs on one
    machine, where it is the global rank."""
    return int(os.environ.get("LOCAL_RANK", dist.get_rank() if process_group_active() else 0))


def rank_device(requested: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA was asked for, else the one asked for (cpu)."""
    return torch.device("cuda", local_rank()) if requested.type == "cuda" else torch.device(requested.type)


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """DDP's device_ids for a module on ``device``: its GPU's index, None for a CPU module (DDP refuses any)."""
    return [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> DDP:
    return DDP(module, device_ids=ddp_device_ids(device))


def rewrap_ddp(trainer) -> None:
    """``trainer.network`` becomes a new DDP wrapper of the same module (DDP fixes which parameters it reduces
    when it wraps; after requires_grad changed, wrap again). The old wrapper is dropped here: its reducer goes
    with it and removes its gradient hooks, so each gradient is all-reduced once, by the new wrapper. The new one
    broadcasts rank 0's weights, which every rank already holds."""
    module = trainer.network.module
    trainer.network = None  # the old wrapper's last reference: freed before the new one registers its hooks
    trainer.network = wrap_ddp(module, trainer.device)


# ---------------------------------------------------------------- the checks before training

def case_identifiers(folder: str | None) -> list[str]:
    """The cases of a preprocessed data folder, by nnU-Net's own dataset class; [] where there is none yet."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if folder is None or not os.path.isdir(folder):
        return []
    try:
        return sorted(infer_dataset_class(folder).get_identifiers(folder))
    except (AssertionError, KeyError, IndexError):  # no or mixed files: nnU-Net reports it when it loads them
        return []


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def input_digests(plans: dict, configuration: str, dataset_json: dict, cases: list[str]) -> dict:
    """What must be the same on every rank, as sha256 digests: the plans with the configuration, dataset.json,
    the preprocessed cases (and their count, for the message)."""
    return {"plans": _digest([plans, configuration]), "dataset.json": _digest(dataset_json),
            "cases": _digest(cases), "num_cases": len(cases)}


def inputs_mismatch(gathered: list[tuple[str, dict]]) -> str | None:
    """None when every rank's (host, input_digests) equals rank 0's; else one sentence naming the first rank that
    differs, its host and what differs."""
    host0, first = gathered[0]
    others = [(rank, host, d) for rank, (host, d) in enumerate(gathered) if d != first]
    if not others:
        return None
    rank, host, digests = others[0]
    parts = [key for key in ("plans", "dataset.json") if digests[key] != first[key]]
    if digests["cases"] != first["cases"]:
        parts.append(f"preprocessed cases ({digests['num_cases']} against {first['num_cases']})")
    more = f" (and {len(others) - 1} rank(s) more)" if len(others) > 1 else ""
    return (f"rank {rank} (host {host}){more} reads other {', '.join(parts)} than rank 0 (host {host0}): every node "
            f"must read the same nnUNet_preprocessed (a shared filesystem, or an identical copy of it)")


def check_same_inputs(plans: dict, configuration: str, dataset_json: dict, data_folder: str | None) -> None:
    """Refuses, on every rank, a run whose ranks read different plans, dataset.json or cases (one all-gather)."""
    mine = (socket.gethostname(), input_digests(plans, configuration, dataset_json, case_identifiers(data_folder)))
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    problem = inputs_mismatch(gathered)
    if problem:
        raise CMCLInputError(problem)


def batch_split_problem(batch: int, world: int, trainer: str, configuration: str, plans_name: str) -> str | None:
    """Why ``batch`` cannot be split over ``world`` ranks, in one sentence with the fix; None when it can."""
    if batch % world == 0:
        return None
    return (f"{trainer}: the batch of {batch} ({configuration} of {plans_name}) does not split evenly over "
            f"{world} ranks; each rank must hold an equal share (CMCL gathers equal shares across ranks, and DDP's "
            f"gradient mean would weight unequal ones unequally): pretrain with plans from `nnunet-cmcl "
            f"pretrain-plans -d DATASET -c {configuration} -tr TRAINER -num_gpus {world}` (or `nnunet-cmcl prepare "
            f"... -num_gpus {world}`), fine-tune with a plans copy whose batch_size is a multiple of {world}")


class RankPlacement:
    """Mixin for nnUNetTrainer subclasses (before the nnU-Net class among the bases; ``SeededTraining`` brings
    it): under DDP, the device is ``cuda:LOCAL_RANK`` (or the CPU) and the DDP wrapper's device ids follow it.

    nnU-Net's ``initialize`` wraps ``DDP(network, device_ids=[self.local_rank])``, the global rank, which is wrong
    on a second node and refused on the CPU. So ``initialize`` runs nnU-Net's with ``is_ddp`` off, which builds
    everything but the wrapper, and wraps here. The two places inside it that must see the run as distributed
    see it so: the batch split over the ranks (``_set_batch_size_and_oversample``) and nnU-Net's loss (Dice
    summed over ranks, ``_build_loss``). A subclass whose own ``_build_loss`` reads ``is_ddp`` before calling
    super() sees it off. Before that, in ``__init__``: the refusals (one collective first, so that every rank
    refuses alike), and rank 0 writes a missing splits_final.json before the other ranks read it.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not self.is_ddp:
            return
        self.device = rank_device(device)  # nnU-Net set cuda:<global rank>
        if self.device.type != "cuda":
            self.grad_scaler = None  # nnU-Net made one for the GPU it assumed; its CPU steps run without one
        # a collective first, which every rank reaches: a rank with other plans must not refuse alone below
        check_same_inputs(self.plans_manager.plans, configuration, dataset_json, self.preprocessed_dataset_folder)
        problem = batch_split_problem(self.configuration_manager.batch_size, dist.get_world_size(),
                                      type(self).__name__, configuration, self.plans_manager.plans_name)
        if problem:
            raise CMCLInputError(problem)
        # nnU-Net's do_split writes a missing splits_final.json on every rank, which another rank may read half
        # written: rank 0 writes it first
        if self.local_rank == 0 and fold != "all" and os.path.isdir(self.preprocessed_dataset_folder or ""):
            self.do_split()
        dist.barrier()

    def initialize(self):
        deferred = self.is_ddp and not self.was_initialized  # then the wrap is done here, not by nnU-Net
        if deferred:
            self.is_ddp = False
        try:
            super().initialize()
        finally:
            if deferred:
                self.is_ddp = True
        if deferred:
            if self.device.type == "cuda":  # as nnU-Net; SyncBatchNorm runs on GPUs only, a CPU rank keeps its own
                self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
            self.network = wrap_ddp(self.network, self.device)
            self.print_to_log_file(
                f"distributed: world size {dist.get_world_size()} ({dist.get_backend()}), batch {self.batch_size} "
                f"per rank, global batch {self.configuration_manager.batch_size}; rank 0 on {socket.gethostname()}, "
                f"{self.device}", also_print_to_console=True)

    @contextmanager
    def _seen_as_distributed(self):
        was, self.is_ddp = self.is_ddp, process_group_active()
        try:
            yield
        finally:
            self.is_ddp = was

    def _set_batch_size_and_oversample(self):
        with self._seen_as_distributed():
            super()._set_batch_size_and_oversample()

    def _build_loss(self):
        with self._seen_as_distributed():
            return super()._build_loss()

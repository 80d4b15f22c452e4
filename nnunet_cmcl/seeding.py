"""Training seeds that travel with the fold: ``splits_final.json[fold]["cmcl_train_seed"]``.

nnU-Net sets no seed, so two runs of the same trainer and fold differ by more than most method changes. A
seeded repeat of a fold is an extra entry of splits_final.json (the same 'train' and 'val', plus the seed; see
``study.splits.add_train_seed_folds``), so it gets its own results folder by nnU-Net's own fold naming, and the
trainer reads its seed from the fold it trains. ``SeededTraining`` seeds Python's ``random``, numpy and torch
before the network is built, and gives each of nnU-Net's augmentation workers a seed of its own.

What this reproduces: on the CPU with ``nnUNet_n_proc_DA=0`` (batches drawn in the main process), the same seed
gives the same weights and validation Dice, bit for bit (test_experiment.py). With one worker per loader
(``=1``, the CPU preset's default) the same is expected, since one seeded worker delivers its batches in order,
but it is not tested. With more workers, nnU-Net's NonDetMultiThreadedAugmenter takes batches from
whichever worker is ready first, so the order, and with it the run, varies. On GPUs nnU-Net turns on
``cudnn.benchmark`` and cuDNN/atomics are non-deterministic: seeds make runs comparable (the same weights at
the start, the same label subset, each worker's own random stream), not identical. A run resumed with ``--c``
continues from the checkpoint's weights but not from the random state it stopped in.
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_cmcl.launch import RankPlacement
from nnunet_cmcl.overrides import apply_overrides
from nnunet_cmcl.run_settings import write_trainer_settings

TRAIN_SEED_KEY = "cmcl_train_seed"
WORKER_SEED_STRIDE = 1000  # worker i of rank r gets seed * STRIDE + 100 * r + i: apart from every other seed's


def train_seed_of_fold(preprocessed_dataset_folder: str, fold) -> int | None:
    """The seed of ``fold`` in the folder's splits_final.json, None for an unseeded fold or fold 'all'."""
    if not isinstance(fold, int) and not (isinstance(fold, str) and fold.isdigit()):
        return None
    path = os.path.join(preprocessed_dataset_folder, "splits_final.json")
    try:
        with open(path) as f:
            splits = json.load(f)
        seed = splits[int(fold)].get(TRAIN_SEED_KEY)
    except (OSError, ValueError, IndexError, AttributeError, TypeError):
        return None  # nnU-Net's own do_split reports a missing or broken file and fold
    return int(seed) if seed is not None else None


def seed_everything(seed: int) -> None:
    """Seeds Python's random, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def worker_seeds(seed: int, rank: int, count: int, offset: int = 0) -> list[int]:
    """Distinct seeds for ``count`` augmentation workers of one loader on one rank."""
    return [seed * WORKER_SEED_STRIDE + 100 * rank + offset + i for i in range(count)]


def reseed_workers(augmenter, seeds: list[int]) -> bool:
    """Gives a started NonDetMultiThreadedAugmenter new worker seeds: its workers are stopped and start again,
    seeded, on the next batch (nnU-Net starts them with seed None, i.e. from OS entropy). False for an
    augmenter without workers (nnUNet_n_proc_DA=0), whose draws come from the seeded main process."""
    if not hasattr(augmenter, "seeds") or not hasattr(augmenter, "_finish"):
        return False
    augmenter._finish()
    augmenter.seeds = list(seeds)
    return True


class SeededTraining(RankPlacement):
    """Mixin for nnUNetTrainer subclasses (put it before the nnU-Net class among the bases): reads the fold's
    training seed, seeds everything before the network is built, seeds the augmentation workers, and records
    the seed in the log and in debug.json (``train_seed``). Every trainer of the package has it, and through it
    ``launch.RankPlacement``: each DDP rank on its own device, under nnU-Net's -num_gpus and under torchrun."""

    reads_train_seed = True  # the study refuses seeded folds for trainers without this

    def initialize(self):
        if not self.was_initialized:
            self.train_seed = train_seed_of_fold(self.preprocessed_dataset_folder_base, self.fold)
            if self.train_seed is not None:
                # ranks draw different batches; DDP copies rank 0's initial weights to every rank anyway
                seed_everything(self.train_seed * WORKER_SEED_STRIDE + 100 * self.local_rank + 99)
        super().initialize()

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:  # what this run is trained with, checked by `experiment` before it skips the run
            write_trainer_settings(self, self.output_folder)

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        seed = getattr(self, "train_seed", None)
        if seed is not None:
            seeded = [reseed_workers(gen, worker_seeds(seed, self.local_rank, getattr(gen, "num_processes", 0),
                                                       offset)) for gen, offset in ((train, 0), (val, 50))]
            workers = "seeded workers" if any(seeded) else "batches drawn in the main process"
            self.print_to_log_file(f"training seed {seed} (fold {self.fold} of splits_final.json; {workers})",
                                   also_print_to_console=True)
        return train, val


class nnUNetTrainerSeeded(SeededTraining, nnUNetTrainer):
    """nnU-Net's default trainer, unchanged but for the fold's training seed: the study's baseline arm."""

    overrides: dict = {}  # set after nnU-Net's defaults (num_epochs, ...): a budget variant is one line

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_overrides(self, self.overrides)

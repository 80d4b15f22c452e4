"""Arguments and checks shared by several commands of ``nnunet-cmcl``."""
from __future__ import annotations

import argparse
import os

from nnunet_cmcl.errors import CMCLInputError

DEVICES = ("cuda", "cpu", "mps")


# ---------------------------------------------------------------- arguments shared by several commands

def dataset_arguments(p: argparse.ArgumentParser, dataset_help: str) -> None:
    p.add_argument("-d", required=True, help=dataset_help)
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")


def target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint_*.pth")
    p.add_argument("-d", required=True, help="target dataset name or id")
    p.add_argument("-c", required=True, help="target configuration, e.g. 3d_fullres")
    p.add_argument("-p", default="nnUNetPlans", help="target plans identifier (default nnUNetPlans)")


def pretraining_trainer_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-tr", default="nnUNetTrainerCMCL",
                   help="pretraining trainer the plans are sized for (default nnUNetTrainerCMCL): the batch is the "
                        "largest whose step holds at most the vanilla step's feature maps by nnU-Net's estimate, at "
                        "most 4x the target's; it shrinks for a step that runs the decoder too (_DAE, _recon)")
    # nnUNetv2_train's spelling: nnU-Net splits the plans' batch over the GPUs
    p.add_argument("-num_gpus", type=int, default=1,
                   help="GPUs the pretraining runs on, as nnUNetv2_train -num_gpus (default 1); the batch is made "
                        "divisible by it")


def device_argument(p: argparse.ArgumentParser, default: str | None = "cuda", choices: tuple[str, ...] = DEVICES,
                    help: str | None = None) -> None:
    """``-device``, as nnU-Net's commands spell it, into ``args.device``; ``--device`` parses too but is not shown."""
    p.add_argument("-device", default=default, choices=choices, help=help or f"device (default {default})")
    # the spelling of earlier versions, kept for scripts; SUPPRESS: its default does not overwrite -device's
    p.add_argument("--device", dest="device", default=argparse.SUPPRESS, choices=choices, help=argparse.SUPPRESS)


# nnU-Net's folders each command reads or writes, checked before any work
NEEDED_PATHS = {"verify": ("nnUNet_preprocessed",), "export": ("nnUNet_preprocessed",),
                "prepare": ("nnUNet_raw", "nnUNet_preprocessed"), "pretrain-plans": ("nnUNet_preprocessed",),
                "splits": ("nnUNet_preprocessed",), "compare": ("nnUNet_results",),
                "evaluate-missing": ("nnUNet_preprocessed", "nnUNet_results"), "predict": ("nnUNet_results",),
                "experiment": ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), "check-data": ("nnUNet_raw",),
                "train": ("nnUNet_preprocessed", "nnUNet_results")}


def check_paths(command: str) -> None:
    for name in NEEDED_PATHS.get(command, ()):
        value = os.environ.get(name)
        if not value:
            raise CMCLInputError(f"{name} is not set; export {name}=/path/to/{name} as nnU-Net's "
                                 f"documentation/set_environment_variables.md describes")
        if not os.path.isdir(value):
            raise CMCLInputError(f"{name}={value} is not a folder; create it or correct the path")

"""nnUNetTrainerCMCLFinetune: nnU-Net's segmentation training, started from CMCL weights.

Its own class name gives it its own results folder, so the vanilla nnUNetTrainer baseline of the same
dataset and fold is never overwritten. Weights come in through nnU-Net's ``-pretrained_weights``.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_cmcl.atomic import write_atomically
from nnunet_cmcl.checkpoints import cmcl_record, load_checkpoint_safely, sha256
from nnunet_cmcl.dist import unwrap
from nnunet_cmcl.overrides import apply_overrides

PRETRAINED_ENV = "nnUNet_CMCL_pretrained_weights"  # for runs started from Python instead of nnUNetv2_train


def pretrained_weights_path(argv: list[str] | None = None) -> str | None:
    """The -pretrained_weights file of this nnUNetv2_train run (nnU-Net does not hand it to the trainer).

    An exact match, not argparse: argparse would take ``-p PLANS`` for an abbreviation of it.
    """
    argv = sys.argv[1:] if argv is None else argv
    for flag, value in zip(argv, argv[1:]):
        if flag == "-pretrained_weights":
            return value
    return os.environ.get(PRETRAINED_ENV)


class WarmupPolyLRScheduler(PolyLRScheduler):
    """Linear warm-up over ``warmup_steps`` then nnU-Net's poly decay; param group 0 (the encoder) is held at
    lr 0 for the first ``frozen_steps``. Frozen by learning rate, not requires_grad, so DDP stays valid."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int, frozen_steps: int = 0):
        self.warmup_steps = warmup_steps
        self.frozen_steps = frozen_steps
        super().__init__(optimizer, initial_lr, max_steps)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        super().step(current_step)
        if current_step < self.warmup_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.initial_lr * (current_step + 1) / (self.warmup_steps + 1)
        if current_step < self.frozen_steps:
            self.optimizer.param_groups[0]["lr"] = 0.0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class nnUNetTrainerCMCLFinetune(nnUNetTrainer):
    """Fine-tuning from a CMCL checkpoint: ``nnUNetv2_train D C F -tr nnUNetTrainerCMCLFinetune -pretrained_weights CKPT``."""

    warmup_epochs = 50  # linear warm-up: the new decoder should not wreck the pretrained encoder at full lr
    freeze_encoder_epochs = 0  # > 0: only the decoder learns for these first epochs
    # set after nnU-Net's defaults, so a variant is one line: overrides = {"num_epochs": 100}
    overrides: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_overrides(self, self.overrides)

    def initialize(self):
        # nnU-Net's load_pretrained_weights runs right after this with torch.load(weights_only=False), which
        # executes whatever the file's pickle holds: read it safely first, so a corrupt or foreign file stops
        # here with one line and a malicious one never reaches the unsafe loader
        path = pretrained_weights_path()
        if path is not None and not self.was_initialized:
            self._pretrained_checkpoint = load_checkpoint_safely(path)  # kept for on_train_start's record
        super().initialize()

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net's torch.save goes straight to the final name; a kill mid-write would corrupt the checkpoint
        write_atomically(filename, super().save_checkpoint)

    def configure_optimizers(self):
        encoder = set(id(p) for p in unwrap(self.network).encoder.parameters())
        groups = [{"params": [p for p in self.network.parameters() if id(p) in encoder]},
                  {"params": [p for p in self.network.parameters() if id(p) not in encoder]}]
        optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs,
                                          min(self.warmup_epochs, self.num_epochs), self.freeze_encoder_epochs)
        return optimizer, scheduler

    def on_train_start(self):
        # recorded before super() writes debug.json, which stores every plain attribute of the trainer;
        # a resumed run (--c) has trained weights: its source was recorded when it started
        checkpoint = vars(self).pop("_pretrained_checkpoint", None)  # not an attribute debug.json should print
        self.pretrained_source = self._describe_pretrained_weights(checkpoint) if self.current_epoch == 0 else \
            {"resumed_at_epoch": self.current_epoch}
        super().on_train_start()
        self.print_to_log_file(f"warm-up epochs: {self.warmup_epochs}, encoder frozen for the first "
                               f"{self.freeze_encoder_epochs} epochs")
        self.print_to_log_file("pretrained weights: " + json.dumps(self.pretrained_source))

    def _describe_pretrained_weights(self, checkpoint: dict | None) -> dict:
        path = pretrained_weights_path()
        if path is None:
            self.print_to_log_file("WARNING: no -pretrained_weights given: this run starts from random weights "
                                   "like the vanilla baseline")
            return {"path": None}
        if checkpoint is None:  # initialize() did not read it (it ran before the path was set)
            checkpoint = load_checkpoint_safely(path)
        network_state = unwrap(self.network).state_dict()
        encoder_keys = [k for k in network_state if k.startswith("encoder.")]
        loaded = sum(torch.equal(network_state[k].cpu(), checkpoint["network_weights"][k].cpu())
                     for k in encoder_keys if k in checkpoint["network_weights"])
        return {"path": os.path.abspath(path), "sha256": sha256(path), "trainer": checkpoint.get("trainer_name"),
                "epoch": checkpoint.get("current_epoch"), "cmcl_config": cmcl_record(checkpoint).get("config"),
                "encoder_tensors_equal_to_checkpoint": f"{loaded}/{len(encoder_keys)}"}

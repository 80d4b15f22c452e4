"""nnUNetTrainerCMCLFinetune: nnU-Net's segmentation training, started from CMCL weights.

Its own class name gives it its own results folder, so the vanilla nnUNetTrainer baseline of the same
dataset and fold is never overwritten. Weights come in through nnU-Net's ``-pretrained_weights``.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_cmcl.atomic import write_atomically
from nnunet_cmcl.checkpoints import cmcl_record, load_checkpoint_safely, sha256
from nnunet_cmcl.dist import unwrap
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.launch import rewrap_ddp
from nnunet_cmcl.overrides import apply_overrides
from nnunet_cmcl.seeding import SeededTraining
from nnunet_cmcl.transfer.schedule import WarmupPolyLRScheduler, warmup_iterations

PRETRAINED_ENV = "nnUNet_CMCL_pretrained_weights"  # for runs started from Python instead of nnUNetv2_train
PRETRAINED_FLAG = "-pretrained_weights"


def pretrained_weights_path(argv: list[str] | None = None) -> str | None:
    """The -pretrained_weights file of this nnUNetv2_train run (nnU-Net does not hand it to the trainer).

    Read as nnUNetv2_train's argparse reads it: ``-pretrained_weights PATH`` or ``-pretrained_weights=PATH``, the
    last one given wins; its abbreviations are ambiguous with ``-p`` there, so argparse refuses them. Not argparse
    itself: a parser knowing this flag alone would take ``-p PLANS`` for an abbreviation of it.
    """
    argv = sys.argv[1:] if argv is None else argv
    found = None
    for i, token in enumerate(argv):
        if token == PRETRAINED_FLAG and i + 1 < len(argv):
            found = argv[i + 1]
        elif token.startswith(PRETRAINED_FLAG + "="):
            found = token[len(PRETRAINED_FLAG) + 1:]
    return found if found is not None else os.environ.get(PRETRAINED_ENV)


class nnUNetTrainerCMCLFinetune(SeededTraining, nnUNetTrainer):
    """Fine-tuning from a CMCL checkpoint: ``nnUNetv2_train D C F -tr nnUNetTrainerCMCLFinetune -pretrained_weights CKPT``."""

    # linear warm-up over this fraction of the schedule (at most max_warmup_epochs). 0: none, nnU-Net's own
    # schedule, so nnU-Net's default trainer is the schedule-matched control. Chosen by the CPU study: a 5 % warm-up
    # cost the scratch control 0.02-0.06 Dice against nnU-Net and CMCL 0.024-0.039 against CMCL without it
    # (docs/study.md); nnUNetTrainerCMCLFinetune_warmup keeps the 5 % ramp of the field's recipe
    warmup_fraction = 0.0
    max_warmup_epochs = 50
    freeze_encoder_epochs = 0  # > 0: only the decoder learns for these first epochs
    accepts_pretrained_weights = True  # False: a schedule-matched scratch control, which must start from random
    # set after nnU-Net's defaults, so a variant is one line: overrides = {"num_epochs": 100}
    overrides: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.iteration_in_epoch = 0  # the lr is set per iteration: epoch * iterations + this
        apply_overrides(self, self.overrides)

    def initialize(self):
        # nnU-Net's load_pretrained_weights runs right after this with torch.load(weights_only=False), which
        # executes whatever the file's pickle holds: read it safely first, so a corrupt or foreign file stops
        # here with one line and a malicious one never reaches the unsafe loader
        path = pretrained_weights_path()
        if path is not None and not self.accepts_pretrained_weights:
            raise CMCLInputError(f"{type(self).__name__} is a scratch control: it trains the fine-tuning schedule from "
                                 f"random weights; drop -pretrained_weights, or use the trainer without '_scratch'")
        if path is not None and not self.was_initialized:
            self._pretrained_checkpoint = load_checkpoint_safely(path)  # kept for on_train_start's record
        super().initialize()

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net's torch.save goes straight to the final name; a kill mid-write would corrupt the checkpoint. Rank 0
        # writes (nnU-Net's save does nothing elsewhere): other ranks make no temporary name in the results folder
        if self.local_rank == 0:
            write_atomically(filename, super().save_checkpoint)

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()  # nnU-Net's SGD; only the schedule differs
        warmup = warmup_iterations(self.num_epochs, self.num_iterations_per_epoch, self.warmup_fraction,
                                   self.max_warmup_epochs)
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs,
                                                self.num_iterations_per_epoch, warmup)

    def on_train_epoch_start(self):
        # before super(): its lr log line and the first step see the encoder as it is this epoch
        self._set_encoder_trainable(self.current_epoch >= self.freeze_encoder_epochs)
        self.iteration_in_epoch = 0
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        self.lr_scheduler.step_iteration(self.current_epoch * self.num_iterations_per_epoch + self.iteration_in_epoch)
        self.iteration_in_epoch += 1
        return super().train_step(batch)

    def _set_encoder_trainable(self, trainable: bool) -> None:
        """A frozen encoder gets no gradients at all: the optimiser's momentum never holds gradients of the
        random-decoder phase and clip_grad_norm_ does not count them (a learning rate of 0 would do neither)."""
        encoder = unwrap(self.network).encoder
        if all(p.requires_grad == trainable for p in encoder.parameters()):
            return
        encoder.requires_grad_(trainable)
        if self.is_ddp:  # DDP fixes which parameters it reduces when it wraps: a new wrapper, the old one dropped
            rewrap_ddp(self)
        self.print_to_log_file(f"encoder {'trainable' if trainable else 'frozen'} from epoch {self.current_epoch}")

    def on_train_start(self):
        # recorded before super() writes debug.json, which stores every plain attribute of the trainer;
        # a resumed run (--c) has trained weights: its source was recorded when it started
        checkpoint = vars(self).pop("_pretrained_checkpoint", None)  # not an attribute debug.json should print
        self.pretrained_source = self._describe_pretrained_weights(checkpoint) if self.current_epoch == 0 else \
            {"resumed_at_epoch": self.current_epoch}
        super().on_train_start()
        warmup = self.lr_scheduler.warmup
        ramp = "no warm-up" if warmup == 1 else \
            f"linear warm-up over {warmup} iterations ({warmup / self.num_iterations_per_epoch:.2f} epochs)"
        self.print_to_log_file(f"peak learning rate {self.initial_lr}, {ramp}, then poly decay; encoder frozen for the "
                               f"first {self.freeze_encoder_epochs} epochs")
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

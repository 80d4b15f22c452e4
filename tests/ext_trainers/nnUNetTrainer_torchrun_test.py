"""Trainers for tests/nnunet/test_torchrun.py (found through nnUNet_extTrainer like the shipped ones).

Each writes what its rank holds into ``<fold folder>/ranks/`` (every rank, which a shipped trainer never does), so
the test can compare the ranks with each other and with one process.
"""
import dataclasses
import os

import torch
import torch.distributed as dist
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_cmcl.dist import unwrap
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune

TINY = {"num_epochs": 2, "num_iterations_per_epoch": 1, "num_val_iterations_per_epoch": 1}
DIE_AFTER_EPOCH = "CMCL_TEST_RANK1_DIES_AFTER_EPOCH"  # the resume test's kill of the second node


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class _DumpsRanks:
    """Saves unwrap(network)'s state of this rank as ranks/<tag>_rank<r>.pt."""

    def dump(self, tag: str) -> None:
        folder = os.path.join(self.output_folder, "ranks")
        os.makedirs(folder, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in unwrap(self.network).state_dict().items()}
        torch.save(state, os.path.join(folder, f"{tag}_rank{rank()}.pt"))


class _FixedBatches:
    """An endless loader of batches drawn from a seeded generator, the same whatever the world size: step i's
    global batch is fixed, and a rank takes its share (nnU-Net's batch split: rank r holds samples r*b..r*b+b-1)."""

    def __init__(self, seed: int, global_batch: int, per_rank: int, channels: int, patch):
        self.seed, self.global_batch, self.per_rank = seed, global_batch, per_rank
        self.shape, self.step = (global_batch, channels, *patch), 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        g = torch.Generator().manual_seed(self.seed + self.step)
        self.step += 1
        data = torch.randn(self.shape, generator=g)
        part = slice(rank() * self.per_rank, (rank() + 1) * self.per_rank)
        keys = [f"case{self.seed + self.step}_{i}" for i in range(self.global_batch)][part]
        return {"data": data[part], "target": torch.zeros_like(data[part, :1]), "keys": keys}


class nnUNetTrainerCMCL_fixedBatch(_DumpsRanks, nnUNetTrainerCMCL):
    """CMCL on fixed batches with views that draw nothing at random (no shifts, flips or full view; every
    bottleneck location; two modalities, two views): its loss is a function of the batch and the weights alone,
    so two ranks on halves of a batch must give what one process gives on all of it. Two epochs of one step;
    the weights are saved at the start and after each step.

    Plain SGD instead of CMCL's AdamW: an update is then the gradient times the learning rate, so the weights
    compare the gradients. AdamW's first step is about lr * sign(gradient) per element, which turns the float
    rounding of near-zero gradients (conv biases before InstanceNorm) into differences of a whole step."""

    cmcl_config = dataclasses.replace(CMCLConfig(), max_shift_steps=0, flip_views=False, add_full_view=False,
                                      dense_stages=0, dense_locations=10 ** 6)
    overrides = TINY

    def initialize(self):
        torch.manual_seed(0)  # the same initial weights in both runs (DDP copies rank 0's to the others)
        super().initialize()
        self.steps_done = 0

    def configure_optimizers(self):
        optimizer = torch.optim.SGD([p for p in self.network.parameters() if p.requires_grad], lr=0.01)
        return optimizer, PolyLRScheduler(optimizer, 0.01, self.num_epochs)

    def get_dataloaders(self):
        args = (self.configuration_manager.batch_size, self.batch_size, self.num_input_channels,
                self.configuration_manager.patch_size)
        return _FixedBatches(1000, *args), _FixedBatches(5000, *args)

    def on_train_start(self):
        super().on_train_start()
        self.dump("start")

    def train_step(self, batch: dict) -> dict:
        out = super().train_step(batch)
        self.steps_done += 1
        self.dump(f"step{self.steps_done}")
        return out


class nnUNetTrainerCMCL_ddpResume(nnUNetTrainerCMCL):
    """Two epochs of one step, a checkpoint after each; with CMCL_TEST_RANK1_DIES_AFTER_EPOCH=k rank 1 exits hard
    once epoch k is saved, as a node that fails."""

    overrides = {**TINY, "save_every": 1}

    def on_epoch_end(self):
        super().on_epoch_end()
        if os.environ.get(DIE_AFTER_EPOCH) == str(self.current_epoch - 1):
            dist.barrier()  # rank 0 has written checkpoint_latest.pth
            if rank() == 1:
                os._exit(17)


class nnUNetTrainerCMCLFinetune_ddpFreeze(_DumpsRanks, nnUNetTrainerCMCLFinetune):
    """The encoder frozen in epoch 0, trainable in epoch 1 (a new DDP wrapper each time); each rank's weights
    saved at each epoch's start and at the end."""

    freeze_encoder_epochs = 1
    overrides = TINY

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # no mirror axes: the final validation predicts each case once, not 8 times mirrored (test time on the CPU)
        rotation, dummy_2d, patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch_size, None

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.dump(f"epoch{self.current_epoch}")

    def on_train_end(self):
        super().on_train_end()
        self.dump("end")

"""nnUNetTrainerCMCL: cross-modal contrastive pretraining of nnU-Net's encoder inside nnU-Net's loop.

nnU-Net's dataloader, augmentation, optimiser, poly schedule, mixed precision, torch.compile and DDP
are used as they are. What changes: the trained module is the encoder plus projection heads
(``CMCLModel``), the loss is CMCL, validation measures retrieval instead of Dice, and checkpoints store
the plain nnU-Net network under ``network_weights`` so stock ``-pretrained_weights`` loads them.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from time import time
from typing import List

import numpy as np
import torch
from torch import autocast

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context

from nnunet_cmcl.atomic import save_atomically
from nnunet_cmcl.checkpoints import cmcl_record, load_checkpoint_safely, make_record, on_cpu, state_dict_on_cpu
from nnunet_cmcl.dist import mean_over_ranks, true_on_every_rank
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.overrides import apply_overrides
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.losses import CMCLLoss
from nnunet_cmcl.pretraining.model import CMCLModel, stage_key
from nnunet_cmcl.pretraining.monitoring import CMCLMonitoring, ScalerSkipCounter
from nnunet_cmcl.pretraining.outside import inside_image, keep_outside_marker
from nnunet_cmcl.pretraining.progress import plot_progress
from nnunet_cmcl.pretraining.queue import KeyQueue, MomentumEncoder
from nnunet_cmcl.pretraining.views import ViewSampler, check_modalities, modality_groups, total_strides
from nnunet_cmcl.seeding import SeededTraining

LOG_KEYS = ("train_loss_global", "train_loss_dense", "val_retrieval_top1", "val_dense_retrieval_top1",
            "val_embedding_std", "val_alignment", "val_uniformity")


def case_ids(keys, device: torch.device) -> torch.Tensor:
    """(B,) int64 id per case identifier, the same on every rank (a CRC, not Python's salted hash)."""
    ids = torch.tensor([zlib.crc32(str(k).encode()) for k in keys], dtype=torch.long)
    return ids.to(device, non_blocking=True)


def is_improvement(score: float, best: float | None) -> bool:
    """A finite score above the best so far; a NaN best (an epoch without a score) never blocks a later one."""
    return math.isfinite(score) and (best is None or not math.isfinite(best) or score > best)


def check_not_cascaded(configuration: str, previous_stage: str | None) -> None:
    """Refuses a cascade stage: its input has the previous stage's one-hot segmentation appended to the images, and
    those channels belong to no modality (the view sampler would leave them unassigned)."""
    if previous_stage is not None:
        raise CMCLInputError(f"configuration {configuration} is a cascade stage (its input carries {previous_stage}'s "
                             f"segmentation): CMCL pretrains on the images alone, use 3d_fullres or 2d")


class nnUNetTrainerCMCL(CMCLMonitoring, SeededTraining, nnUNetTrainer):
    """CMCL pretraining; run as ``nnUNetv2_train D C all -tr nnUNetTrainerCMCL``. Labels are never used."""

    cmcl_config = CMCLConfig()
    max_consecutive_nonfinite_steps = 20  # then stop: the data or the learning rate is broken, not one batch
    plot_every = 1  # progress.png every this many epochs (and after the last)
    # set after nnU-Net's defaults, so a variant is one line: overrides = {"num_epochs": 100}
    overrides: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        check_not_cascaded(configuration, self.configuration_manager.previous_stage_name)
        self.modality_groups = modality_groups(dataset_json["channel_names"])
        check_modalities(self.modality_groups, self.cmcl_config)
        # a batch that does not split evenly over the ranks was refused before (launch.RankPlacement)
        self.initial_lr = self.cmcl_config.learning_rate
        self.weight_decay = self.cmcl_config.weight_decay
        self.enable_deep_supervision = False  # no segmentation output is trained
        self.oversample_foreground_percent = 0.0  # patch sampling must not look at labels either
        self.plain_network = self.cmcl_model = None  # -> build_network_architecture
        self.momentum_encoder = self.key_queue = None  # -> initialize, when the config has a queue
        self.best_retrieval = None
        self.consecutive_nonfinite_steps = self.skipped_steps_epoch = self.skipped_steps_total = 0
        self.scaler_skips = ScalerSkipCounter()  # steps the grad scaler skipped (CUDA)
        for key in LOG_KEYS:  # nnU-Net's local logger only accepts keys it already knows
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        apply_overrides(self, self.overrides)

    # ---- network -------------------------------------------------------------------------------
    def build_network_architecture(self, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> CMCLModel:
        """Builds nnU-Net's network from the plans and returns its encoder wrapped with the CMCL heads.

        The full plain network is kept as ``self.plain_network`` (it shares the encoder) for the checkpoint.
        """
        network = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                      num_output_channels, enable_deep_supervision)
        encoder = getattr(network, "encoder", None)
        if encoder is None or not getattr(encoder, "return_skips", False) or not hasattr(encoder, "strides"):
            raise CMCLInputError(
                f"{type(network).__name__} has no encoder that returns skips; CMCL pretrains U-Net encoders "
                f"(PlainConvUNet, ResidualEncoderUNet): plan with nnU-Net's default or ResEnc planners")
        sampler = ViewSampler(self.modality_groups, num_input_channels, configuration_manager.patch_size,
                              total_strides(encoder.strides), self.cmcl_config)
        self.plain_network = network
        self.cmcl_model = CMCLModel(encoder, sampler, self.cmcl_config)
        return self.cmcl_model

    def initialize(self):
        super().initialize()
        c = self.cmcl_config
        if c.queue_size and "global" in self.cmcl_model.heads:
            self.momentum_encoder = MomentumEncoder(self.cmcl_model.encoder, self.cmcl_model.heads["global"],
                                                    c.key_momentum).to(self.device)
            self.key_queue = KeyQueue(c.queue_size, c.head_out).to(self.device)
        s = self.cmcl_model.sampler
        grids = [("bottleneck", s.bottleneck_locations)] if "dense" in self.cmcl_model.heads else []
        grids += [(f"stage {k} above it", g) for k, g in enumerate(self.cmcl_model.stage_grids, start=1)]
        dense = "; ".join(f"{name} {g.num_locations} (overlap offers {g.available})" for name, g in grids)
        self.print_to_log_file(
            f"CMCL config: {json.dumps(self.cmcl_config.to_dict())}\n"
            f"CMCL views: {s.num_views} per sample from modalities {self.modality_groups}, crop "
            f"{s.crop_size} of patch {list(self.configuration_manager.patch_size)} (shifts up to {s.shift_steps} "
            f"bottleneck voxels) on a {s.view_bottleneck} bottleneck\n"
            f"CMCL dense locations per sample (the views' overlap offers at least): {dense or 'none'}",
            also_print_to_console=True, add_timestamp=False)
        self.logger.update_config({"cmcl": self.cmcl_config.to_dict()})

    def configure_optimizers(self):
        # weight decay on conv and linear weights only: decaying norm scales and biases pulls them towards 0 and
        # regularises nothing (the usual exclusion, as in MAE and DINO)
        trained = [p for p in self.network.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trained if p.ndim > 1]},
                  {"params": [p for p in trained if p.ndim <= 1], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self) -> CMCLLoss:
        # replaces nnU-Net's Dice+CE (not built: pretraining has no segmentation output), as its loss variants do
        if self.cmcl_config.weight_global + self.cmcl_config.weight_dense == 0:
            raise CMCLInputError(f"{type(self).__name__} has no contrastive term (weight_global = weight_dense = 0) "
                                 f"and no reconstruction; reconstruction-only pretraining is nnUNetTrainerCMCL_recon")
        return CMCLLoss(self.cmcl_config, self._bottleneck_spacing()).to(self.device)

    def _bottleneck_spacing(self) -> list[float]:
        """The physical size of a bottleneck voxel per axis (mm): the dense exclusion radius is measured in it."""
        strides = self.cmcl_model.sampler.strides
        return [float(s) * t for s, t in zip(self.configuration_manager.spacing[-len(strides):], strides)]

    @classmethod
    def get_training_transforms(cls, *args, **kwargs):
        # nnU-Net's augmentation as it is, but the -1 that marks the outside of the image stays: the dense terms
        # find the image by it (inside_image), and nnU-Net's last transform would turn it into background 0
        return keep_outside_marker(super().get_training_transforms(*args, **kwargs))

    @classmethod
    def get_validation_transforms(cls, *args, **kwargs):
        return keep_outside_marker(super().get_validation_transforms(*args, **kwargs))

    def set_deep_supervision_enabled(self, enabled: bool):
        self.plain_network.decoder.deep_supervision = enabled

    # ---- training --------------------------------------------------------------------------------
    def _forward_loss(self, batch: dict) -> tuple[dict, dict]:
        """(CMCLModel output, loss terms) of one batch; labels are not read, only the segmentation's -1 marker of
        the outside of the image (``inside_image``)."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        inside = inside_image(target.to(self.device, non_blocking=True))
        cases = case_ids(batch["keys"], self.device)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            out = self.network(data, inside)
        out["cases"] = cases
        return out, self.loss(out, cases, self.key_queue.negatives() if self.key_queue is not None else None)

    def train_step(self, batch: dict) -> dict:
        """One CMCL step on nnU-Net's augmented batch; returns the detached loss terms, {} for a skipped step.

        In order (files under nnunet_cmcl/pretraining/; docs/method.md has the same map in more words):

        1. ``_forward_loss``: batch to the device, one case id per sample (``case_ids``), autocast on CUDA.
        2. Views (views.py ``ViewSampler``, called in model.py ``CMCLModel.forward``): each view's stride-aligned,
           randomly shifted and mirrored sub-crop, intensity changes and disruptions (disruptions.py), channel masks.
        3. Encoder: nnU-Net's ``network.encoder``, one pass over all V*B views.
        4. Heads (heads.py, ``CMCLModel.project``): ``GlobalHead`` if weight_global > 0; for each ``DenseHead``
           (bottleneck, and each dense stage) its ``StageGrid`` draws its own locations in that stage's overlap of
           the views, inside the image first (the segmentation's -1 marker, ``inside_image``);
           with a decoder (dae.py) the skips also go through nnU-Net's decoder.
        5. Loss (losses.py ``CMCLLoss``, float32): samples gathered over ranks (dist.py), InfoNCE per term (dense
           locations outside the image masked out as anchors, positives and negatives), the key
           queue's negatives (queue.py) for the global term; dae.py adds the reconstruction MSE.
        6. Backward (through nnU-Net's grad scaler if any), unscale, gradient norm clipped at 12.
        7. Skip decision: a non-finite loss (or gradient, without a scaler), agreed by every rank
           (``true_on_every_rank``: the step's one host sync), makes no update and is counted; otherwise AdamW steps.
           The grad scaler's own skips (inf/NaN gradients) are counted on the device (monitoring.py).
        8. Key queue, with the global term only (``_push_keys``, queue.py): momentum update, then this step's keys.

        The returned terms are averaged per epoch in ``on_train_epoch_end``.
        """
        self.optimizer.zero_grad(set_to_none=True)
        out, losses = self._forward_loss(batch)
        loss = losses["loss"]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        # fp16 gradient overflow is the grad scaler's business (it skips that step and lowers its scale); a
        # non-finite float32 loss, or non-finite gradients without a scaler, mean bad data or a diverging run
        finite = torch.isfinite(loss) if self.grad_scaler is not None else torch.isfinite(loss) & torch.isfinite(grad_norm)
        # the one host sync of a step (nnU-Net's own train_step syncs once too: its loss to numpy); every rank
        # skips the same steps, else DDP would hang
        if not true_on_every_rank(finite):
            self.optimizer.zero_grad(set_to_none=True)  # with a scaler, step() now skips: it finds no gradient
            self._count_nonfinite_step(batch["keys"])
        else:
            self.consecutive_nonfinite_steps = 0
        if self.grad_scaler is not None:
            self.scaler_skips.step(self.grad_scaler, self.optimizer)
        elif self.consecutive_nonfinite_steps == 0:
            self.optimizer.step()
        if self.consecutive_nonfinite_steps:
            return {}  # a skipped step takes no part in the epoch's means
        if self.key_queue is not None:
            self._push_keys(out)
        # detached device tensors, averaged once per epoch
        return {k: v.detach() for k, v in losses.items()}

    def _push_keys(self, out: dict) -> None:
        """After an update: the momentum encoder follows the online one, and its keys of this step's views join
        the queue, for the next steps' global negatives (MoCo's order)."""
        self.momentum_encoder.update(self.cmcl_model.encoder, self.cmcl_model.heads["global"])
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            keys = self.momentum_encoder(out["views"])  # (V*B, D), view-major
        self.key_queue.push(keys, out["cases"].repeat(self.cmcl_model.sampler.num_views))

    def _count_nonfinite_step(self, keys) -> None:
        self.consecutive_nonfinite_steps += 1
        self.skipped_steps_epoch += 1
        self.skipped_steps_total += 1
        self.print_to_log_file(f"WARNING: non-finite loss or gradients, update skipped (cases {list(keys)})")
        if self.consecutive_nonfinite_steps >= self.max_consecutive_nonfinite_steps:
            raise RuntimeError(
                f"stopped: {self.consecutive_nonfinite_steps} consecutive steps had non-finite loss or gradients "
                f"({self.skipped_steps_total} in all). The last checkpoint in {self.output_folder} holds the last "
                f"good weights. Look for NaN/Inf voxels with `nnunet-cmcl check-data -d DATASET`, or lower "
                f"learning_rate; then continue with --c")

    def _epoch_mean(self, outputs: List[dict], key: str) -> float:
        # skipped steps return {}; every rank skipped the same ones, so all ranks reach the all_reduce or none
        values = [o[key] for o in outputs if key in o]
        if not values:
            return float("nan")
        return mean_over_ranks(torch.stack(values).float().mean()).item()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.skipped_steps_epoch = 0

    def on_train_epoch_end(self, train_outputs: List[dict]):
        if self.skipped_steps_epoch:
            self.print_to_log_file(f"{self.skipped_steps_epoch} of {len(train_outputs)} steps skipped for non-finite "
                                   f"loss or gradients ({self.skipped_steps_total} in all)")
        self.log_grad_scaler(len(train_outputs))
        self.logger.log("train_losses", self._epoch_mean(train_outputs, "loss"), self.current_epoch)
        for term in ("global", "dense"):
            self.logger.log(f"train_loss_{term}", self._epoch_mean(train_outputs, f"loss_{term}"), self.current_epoch)
        # the stages above the bottleneck (dense_stages) go to the log only: a key new to nnU-Net's logger would
        # break --c from a checkpoint written without it
        stages = [f"{self._epoch_mean(train_outputs, f'loss_{stage_key(k)}'):.4f}"
                  for k in range(1, self.cmcl_config.dense_stages + 1)]
        if stages:
            self.print_to_log_file(f"train_loss dense on the {len(stages)} stages above the bottleneck: "
                                   f"{', '.join(stages)}")

    # ---- validation: retrieval instead of Dice, in monitoring.py (CMCLMonitoring) ---------------------
    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("CMCL pretraining trains no segmentation output: nnU-Net's segmentation "
                               "validation is skipped. Fine-tune with -pretrained_weights to segment.")

    # ---- epoch end, checkpoints ----------------------------------------------------------------------
    def _get(self, key: str) -> float:
        return self.logger.get_value(key, step=-1)

    def on_epoch_end(self):
        # nnU-Net's version reports pseudo Dice and keeps the best EMA Dice; CMCL has no Dice
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        self.print_to_log_file(
            f"train_loss {self._get('train_losses'):.4f} (global {self._get('train_loss_global'):.4f}, dense "
            f"{self._get('train_loss_dense'):.4f}) val_loss {self._get('val_losses'):.4f}")
        self.log_validation_metrics()  # with the collapse warning
        self.print_to_log_file(f"Epoch time: {self._get('epoch_end_timestamps') - self._get('epoch_start_timestamps'):.2f} s")

        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        score = self._get("val_retrieval_top1")
        if np.isnan(score):  # no global head: rank checkpoints by dense retrieval
            score = self._get("val_dense_retrieval_top1")
        if is_improvement(score, self.best_retrieval):
            self.best_retrieval = score
            self.print_to_log_file(f"New best validation retrieval top-1: {score:.4f}")
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best.pth"))
        last = self.current_epoch + 1 == self.num_epochs
        if self.local_rank == 0 and ((self.current_epoch + 1) % self.plot_every == 0 or last):
            plot_progress(self.logger.local_logger.my_fantastic_logging, self.output_folder)
        self.current_epoch += 1

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net's version would store the encoder-plus-heads module; network_weights must be the plain network
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": state_dict_on_cpu(self.plain_network),
            "cmcl": make_record(config=self.cmcl_config.to_dict(), heads=state_dict_on_cpu(self.cmcl_model.heads),
                                modalities={"channel_names": self.dataset_json["channel_names"],
                                            "groups": self.modality_groups},
                                best_retrieval=self.best_retrieval, skipped_steps=self.skipped_steps_total,
                                scaler_skipped_steps=self.scaler_skips.total, **self._queue_state()),
            # CPU tensors like the weights: stock -pretrained_weights reads the whole file without map_location, so
            # CUDA tensors here would fail on a machine without a GPU; load_state_dict moves them back on resume
            "optimizer_state": on_cpu(self.optimizer.state_dict()),
            "grad_scaler_state": on_cpu(self.grad_scaler.state_dict()) if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": None,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }
        save_atomically(checkpoint, filename)

    def _queue_state(self) -> dict:
        if self.key_queue is None:
            return {}
        return {"momentum_encoder": state_dict_on_cpu(self.momentum_encoder), "queue": state_dict_on_cpu(self.key_queue)}

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):  # --c: read without running code from the file, like all our commands
            checkpoint = load_checkpoint_safely(checkpoint)
        record = cmcl_record(checkpoint)
        if "config" not in record:
            raise CMCLInputError("the checkpoint has no CMCL record: it was not written by a CMCL trainer; continue "
                                 "with the trainer that wrote it")
        stored = CMCLConfig.from_dict(record["config"])
        if stored != self.cmcl_config:
            raise CMCLInputError(f"the checkpoint was trained with CMCL config {stored}, this trainer uses "
                                 f"{self.cmcl_config}; continue with the trainer that wrote it")
        self.plain_network.load_state_dict(checkpoint["network_weights"])  # the encoder is shared with cmcl_model
        if set(record["heads"]) != set(self.cmcl_model.heads.state_dict()):
            raise CMCLInputError("the checkpoint's projection heads come from an earlier nnunet-cmcl (other tensors); "
                                 "continue it with that version, or start a new pretraining run")
        self.cmcl_model.heads.load_state_dict(record["heads"])
        if self.key_queue is not None:  # the config check above guarantees the record has them
            self.momentum_encoder.load_state_dict(record["momentum_encoder"])
            self.key_queue.load_state_dict(record["queue"])
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self.best_retrieval = record["best_retrieval"]
        self.skipped_steps_total = record.get("skipped_steps", 0)
        self.scaler_skips.total = record.get("scaler_skipped_steps", 0)
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])

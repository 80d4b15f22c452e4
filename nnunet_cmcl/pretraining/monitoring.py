"""Monitoring of CMCL pretraining: validation by retrieval instead of Dice, the embeddings' health with the collapse
alarm, and the steps the grad scaler skipped. ``CMCLMonitoring`` is a mixin of nnUNetTrainerCMCL."""
from __future__ import annotations

import math
from typing import List

import torch

from nnunet_cmcl.dist import mean_over_ranks
from nnunet_cmcl.pretraining.metrics import dense_validation_metrics, global_validation_metrics

METRICS = ("retrieval_top1", "dense_retrieval_top1", "embedding_std", "alignment", "uniformity")  # logged as val_*


class ScalerSkipCounter:
    """Counts the optimiser steps a grad scaler skipped: it skips a step with inf/NaN gradients (fp16 overflow, or
    a NaN loss) and then lowers its scale, which is how a skip is recognised.

    The count stays on the device and is read once an epoch: reading the scale every step would add a host sync.
    """

    def __init__(self):
        self.epoch: torch.Tensor | None = None  # () int64 on the device: this epoch's skips so far
        self.total = 0  # every finished epoch's

    def step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        """``scaler.step(optimizer)`` and ``scaler.update()``, counting the step when update() lowered the scale."""
        scale = getattr(scaler, "_scale", None)  # the device tensor behind get_scale(), which reads it on the host
        before = scale.clone() if scaler.is_enabled() and scale is not None else None
        scaler.step(optimizer)
        scaler.update()
        if before is not None:
            skipped = (scaler._scale < before).long()
            self.epoch = skipped if self.epoch is None else self.epoch + skipped

    def end_epoch(self) -> int:
        """This epoch's count (one host read), added to ``total``; the next epoch counts from 0."""
        skipped = int(self.epoch.item()) if self.epoch is not None else 0
        self.epoch = None
        self.total += skipped
        return skipped


class CMCLMonitoring:
    """validation_step, on_validation_epoch_end, the epoch's metric line with the collapse warning, and the grad
    scaler's line. Uses the trainer's ``_forward_loss``, ``_epoch_mean``, ``_get`` and ``scaler_skips``."""

    def embedding_source(self) -> str:
        """Which embeddings embedding std, alignment and uniformity describe: the global ones where there is a global
        head, else the bottleneck's dense ones (at locations inside the image); 'no' without either head."""
        return next((k for k in ("global", "dense") if k in self.cmcl_model.heads), "no")

    def validation_step(self, batch: dict) -> dict:
        out, losses = self._forward_loss(batch)
        result = {"loss": losses["loss"].detach(), "cases": out["cases"]}
        if "global" in out:
            result["global"] = out["global"].detach().float()  # (V, B, D)
        if "dense" in out:  # the metrics come at the epoch's end, over every rank's batch of each step
            result["dense"] = out["dense"].detach().float()  # (V, B, M, D), the bottleneck's
            result["inside"] = out["inside"]  # (B, M)
            # (T,) the share of each dense term's sampled locations inside the image, the bottleneck's first
            result["inside_share"] = torch.stack([out[k].float().mean() for k in out if k.startswith("inside")])
        return result

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        epoch = self.current_epoch
        self.logger.log("val_losses", self._epoch_mean(val_outputs, "loss"), epoch)
        metrics = dict.fromkeys(METRICS, float("nan"))
        self.inside_share = []  # printed by log_validation_metrics; not in nnU-Net's logger, which --c checks
        if "dense" in val_outputs[0]:
            share = torch.stack([o["inside_share"] for o in val_outputs]).mean(dim=0)
            self.inside_share = mean_over_ranks(share).tolist()
            dense = dense_validation_metrics(torch.stack([o["dense"] for o in val_outputs]),
                                             torch.stack([o["inside"] for o in val_outputs]),
                                             torch.stack([o["cases"] for o in val_outputs]))
            metrics["dense_retrieval_top1"] = dense.pop("retrieval_top1")
            if self.embedding_source() == "dense":
                metrics.update(dense)
        if "global" in val_outputs[0]:
            metrics.update(global_validation_metrics(torch.cat([o["global"] for o in val_outputs], dim=1),
                                                     torch.cat([o["cases"] for o in val_outputs])))
        for key, value in metrics.items():
            self.logger.log(f"val_{key}", value, epoch)

    def log_validation_metrics(self) -> None:
        """The epoch's retrieval and embedding line, and the warning when the embeddings collapse."""
        source = self.embedding_source()
        # only what was measured: the terms a trainer does not have (the global term by default, both for
        # reconstruction only) would print as nan and read as a failure
        parts = [f"{name} retrieval top-1 {self._get(key):.3f}" for name, key in
                 (("global", "val_retrieval_top1"), ("dense", "val_dense_retrieval_top1"))
                 if math.isfinite(self._get(key))]
        if source != "no":
            parts.append(f"{source} embeddings: embedding std {self._get('val_embedding_std'):.3f} alignment "
                         f"{self._get('val_alignment'):.3f} uniformity {self._get('val_uniformity'):.3f}")
        if parts:
            self.print_to_log_file("; ".join(parts))
        if getattr(self, "inside_share", None):
            self.print_to_log_file("dense locations inside the image (bottleneck, then the stages above it): "
                                   + ", ".join(f"{share:.3f}" for share in self.inside_share))
        if self._get("val_embedding_std") < self.cmcl_config.collapse_std_threshold:
            self.print_to_log_file(f"WARNING: {source} embedding std is near 0, the representation is collapsing; "
                                   f"try a higher temperature or a lower learning rate")

    def log_grad_scaler(self, steps: int) -> None:
        """With a grad scaler (CUDA): the epoch's steps it skipped, and its scale (halved at each skip)."""
        if self.grad_scaler is None:
            return
        skipped = self.scaler_skips.end_epoch()
        self.print_to_log_file(f"grad scaler: {skipped} of {steps} steps skipped for inf/NaN gradients "
                               f"({self.scaler_skips.total} in all), scale {self.grad_scaler.get_scale():g}")

"""The fine-tuning learning-rate schedule: linear warm-up, then nnU-Net's poly decay, stepped per iteration.

A pretrained encoder meets a randomly initialised decoder: at nnU-Net's full learning rate from the first step,
the decoder's large early gradients flow into the encoder and can wipe out what pretraining learned. The field's
recipe for pretrained nnU-Net encoders (nnU-Net's ``PretrainedTrainer``; "Revisiting MAE") is a short linear
warm-up. It is a fraction of the schedule, so short runs decay too (a warm-up of a fixed number of epochs made
every run of 50 epochs or fewer warm-up from start to end), and it is stepped per iteration, so a warm-up shorter
than an epoch still ramps.
"""
from __future__ import annotations

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler


def warmup_iterations(num_epochs: int, iterations_per_epoch: int, fraction: float, max_epochs: float) -> int:
    """Warm-up length in iterations: ``fraction`` of the schedule, at most ``max_epochs`` epochs, at least 1."""
    return max(1, round(min(fraction * num_epochs, max_epochs) * iterations_per_epoch))


class WarmupPolyLRScheduler(PolyLRScheduler):
    """lr(i) = min(peak * (i + 1) / W, peak * (1 - e / E) ** 0.9) for iteration i of epoch e: a linear ramp over the
    first W iterations, capped by nnU-Net's own poly schedule (stepped per epoch, as nnU-Net steps it). After the
    warm-up the learning rate is exactly the vanilla baseline's, so the candidate loses only the ramp's share.

    nnU-Net calls ``step(epoch)`` at every epoch start (and logs the lr it sets); the trainer calls
    ``step_iteration(i)`` before every training step with the global iteration index.
    """

    def __init__(self, optimizer, initial_lr: float, num_epochs: int, iterations_per_epoch: int, warmup: int):
        self.iterations_per_epoch = iterations_per_epoch
        self.total_iterations = num_epochs * iterations_per_epoch
        self.warmup = max(1, min(warmup, self.total_iterations))  # a run of one iteration still has a ramp of 1
        super().__init__(optimizer, initial_lr, num_epochs)

    def lr_at(self, iteration: int) -> float:
        poly = self.initial_lr * (1 - (iteration // self.iterations_per_epoch) / self.max_steps) ** self.exponent
        return min(poly, self.initial_lr * (iteration + 1) / self.warmup)

    def step_iteration(self, iteration: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(iteration)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        self.step_iteration(current_step * self.iterations_per_epoch)

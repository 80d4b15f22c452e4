"""More negatives for the global term at nnU-Net's small 3D batches: a MoCo-style queue of keys from a momentum copy
of the encoder and global head (He et al. 2020).

At a batch of 2 a global anchor has 2 negatives, and none when both patches come from one case. The queue holds
the global keys of the last steps with their case ids; keys of the anchor's own case are masked (other patches of
the same anatomy are no negatives). Keys come from a slowly moving copy of the online encoder, so keys of
different steps stay comparable. Both live beside the trained module, not in it: the optimiser, DDP and
torch.compile see only the online network; all ranks push the same gathered keys, so their queues stay equal.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from nnunet_cmcl.dist import all_gather_cat


class MomentumEncoder(nn.Module):
    """An exponential moving average of the online encoder and global head; gives keys (N, D), no gradient."""

    def __init__(self, encoder: nn.Module, global_head: nn.Module, momentum: float):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.head = copy.deepcopy(global_head).requires_grad_(False)
        self.momentum = momentum
        self.eval()  # the head centres with the running centre copied from the online head, never its own batch

    def train(self, mode: bool = True) -> "MomentumEncoder":
        return super().train(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module, global_head: nn.Module) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q; buffers (the head's centre) are copied."""
        for mine, online in ((self.encoder, encoder), (self.head, global_head)):
            ours, theirs = list(mine.parameters()), list(online.parameters())
            torch._foreach_lerp_(ours, [p.detach() for p in theirs], 1 - self.momentum)
            for b_mine, b_online in zip(mine.buffers(), online.buffers()):
                b_mine.copy_(b_online)

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """views (N, C, *Q) -> keys (N, D), L2-normalised, float32."""
        return self.head(self.encoder(views)[-1])


class KeyQueue(nn.Module):
    """A ring buffer of (key, case id); its state is in buffers, so the checkpoint holds it and ``--c`` resumes it."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("cases", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # a tensor: moving it needs no host sync

    @torch.no_grad()
    def push(self, keys: torch.Tensor, cases: torch.Tensor) -> None:
        """keys (N, D), cases (N,) of this rank; every rank's are gathered and written, oldest entries first out."""
        keys, cases = all_gather_cat(keys.float(), dim=0), all_gather_cat(cases, dim=0)
        n = min(len(keys), len(self.keys))
        slots = (self.pointer + torch.arange(n, device=keys.device)) % len(self.keys)
        self.keys.index_copy_(0, slots, keys[-n:])
        self.cases.index_copy_(0, slots, cases[-n:])
        self.filled.index_fill_(0, slots, True)  # a scalar fill: no tensor built from Python data
        self.pointer.copy_((self.pointer + n) % len(self.keys))

    def negatives(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys (Q, D), case ids (Q,), filled (Q,)) for CMCLLoss."""
        return self.keys, self.cases, self.filled

"""Every distributed helper in one place: rank checks, gathers (with and without gradient), reductions, and the
module inside DDP / torch.compile wrappers. Single-process runs take the same code paths at no cost."""
from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP and torch.compile wrappers."""
    module = getattr(module, "module", module)  # DDP
    return getattr(module, "_orig_mod", module)  # torch.compile


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's part (as lightly's GatherLayer).

    Each rank's loss then differentiates through all ranks' embeddings; DDP's gradient averaging turns the
    sum into the gradient of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_samples(x: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenates x of every rank along ``dim``, with gradient to each rank's own part.

    Returns (gathered, index of this rank's samples in the gathered dim). All ranks must hold the
    same number of samples.
    """
    local = x.shape[dim]
    if not distributed():
        return x, torch.arange(local, device=x.device)
    gathered = torch.cat(_GatherWithGradient.apply(x.contiguous()), dim=dim)
    start = dist.get_rank() * local
    return gathered, torch.arange(start, start + local, device=x.device)


def all_gather_cat(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x of every rank concatenated along ``dim``, without gradient (for metrics); x itself when not distributed."""
    if not distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a same-shaped tensor over all ranks."""
    if distributed():
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def true_on_every_rank(flag: torch.Tensor) -> bool:
    """True where the boolean scalar ``flag`` holds on every rank, so all ranks take the same branch (else DDP
    would hang). One host sync."""
    if distributed():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def broadcast_from_rank0(module: torch.nn.Module) -> None:
    """Every rank's parameters and buffers of ``module`` become rank 0's, in place (DDP's wrapper holds the same
    tensors). Nothing happens when not distributed."""
    if distributed():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

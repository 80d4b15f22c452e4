"""Validation metrics of CMCL embeddings: cross-modal retrieval, alignment, uniformity, collapse (std).

References: Wang & Isola 2020 (alignment and uniformity).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nnunet_cmcl.pretraining.losses import MASKED

def retrieval_top1(queries: torch.Tensor, keys: torch.Tensor, ignored: torch.Tensor | None = None,
                   counted: torch.Tensor | None = None) -> float:
    """queries, keys (N, D), row i of both from the same sample: fraction whose nearest key is its own.

    ignored (N, N) bool: keys that are neither right nor wrong for a query (for example other patches
    of the query's case); the diagonal is never ignored. counted (N,) bool: the queries the fraction is over
    (for example the locations inside the image); None counts all, and a query is a key either way.
    """
    similarity = queries.float() @ keys.float().T
    own = torch.arange(len(queries), device=queries.device)
    if ignored is not None:
        similarity = similarity.masked_fill(ignored & (own[:, None] != own[None, :]), MASKED)
    hits = (similarity.argmax(dim=1) == own).float()
    if counted is None:
        return hits.mean().item()
    return ((hits * counted).sum() / counted.sum().clamp(min=1)).item()


def other_samples_of_same_case(case_ids: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
    """(N,), (N,) -> (N, N) bool: pairs cut from one case but from different samples (patches)."""
    return (case_ids[:, None] == case_ids[None, :]) & (sample_ids[:, None] != sample_ids[None, :])


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Mean squared distance of positive pairs (N, D); 0 is perfect alignment."""
    return (z1.float() - z2.float()).pow(2).sum(dim=1).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log mean exp(-t |zi - zj|^2) over distinct pairs of (N, D); lower is more uniform, 0 is collapse."""
    sq = torch.pdist(z.float()).pow(2)
    return (torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())).item()


def normalised_std(z: torch.Tensor) -> float:
    """Per-dimension std of L2-normalised (N, D) embeddings times sqrt(D): about 1 when spread, 0 on collapse."""
    z = F.normalize(z.float(), dim=1)
    return (z.std(dim=0).mean() * math.sqrt(z.shape[1])).item()

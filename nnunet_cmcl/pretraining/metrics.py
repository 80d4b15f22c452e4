"""Validation metrics of CMCL embeddings: cross-modal retrieval, alignment, uniformity, collapse (std).

References: Wang & Isola 2020 (alignment and uniformity).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nnunet_cmcl.dist import all_gather_cat
from nnunet_cmcl.pretraining.losses import MASKED

# uniformity's pdist is quadratic in N: at most this many evenly spaced rows (the dense embeddings of an epoch of
# a large batch on many GPUs would need gigabytes); the global embeddings of an epoch are fewer
UNIFORMITY_SAMPLES = 4096


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


def embedding_health(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """Positive pairs z1, z2 (N, D) -> 'embedding_std' and 'uniformity' of z1, 'alignment' of the pairs; NaN for
    fewer than 2 pairs."""
    if len(z1) < 2:
        return dict.fromkeys(("embedding_std", "alignment", "uniformity"), float("nan"))
    spaced = z1[::math.ceil(len(z1) / UNIFORMITY_SAMPLES)]
    return {"embedding_std": normalised_std(z1), "alignment": alignment(z1, z2), "uniformity": uniformity(spaced)}


def global_validation_metrics(z: torch.Tensor, cases: torch.Tensor) -> dict[str, float]:
    """z (V, N, D) global embeddings of this rank's validation samples, cases (N,) -> 'retrieval_top1' (both
    directions, over every rank's samples) and ``embedding_health`` of view 0 against view 1."""
    z, cases = all_gather_cat(z, dim=1), all_gather_cat(cases, dim=0)
    ignored = other_samples_of_same_case(cases, torch.arange(len(cases), device=cases.device))
    top1 = 0.5 * (retrieval_top1(z[0], z[1], ignored) + retrieval_top1(z[1], z[0], ignored))
    return {"retrieval_top1": top1, **embedding_health(z[0], z[1])}


def dense_retrieval_top1(dense: torch.Tensor, inside: torch.Tensor, cases: torch.Tensor) -> float:
    """dense (V, B, M, D) of one batch, inside (B, M) bool, cases (B,) -> view-0-to-view-1 retrieval top-1 over
    every location of the batch (own patch and other-case patches are candidates), counted on locations inside
    the image: padding looks alike in every modality."""
    queries, keys = dense[0].flatten(0, 1), dense[1].flatten(0, 1)  # (B*M, D)
    b, m = dense.shape[1:3]
    ignored = other_samples_of_same_case(cases.repeat_interleave(m),
                                         torch.arange(b, device=dense.device).repeat_interleave(m))
    return retrieval_top1(queries, keys, ignored, inside.flatten())


def dense_validation_metrics(dense: torch.Tensor, inside: torch.Tensor, cases: torch.Tensor) -> dict[str, float]:
    """The bottleneck's dense embeddings of this rank's S validation steps -> 'retrieval_top1' and
    ``embedding_health`` (view 0 against view 1, at the locations inside the image).

    dense (S, V, B, M, D), inside (S, B, M) bool, cases (S, B). Each step's retrieval runs over every rank's
    samples of that step, the batch one process would see, so the value does not depend on the GPU count; the
    steps' values are averaged.
    """
    dense, cases = all_gather_cat(dense, dim=2), all_gather_cat(cases, dim=1)
    inside = all_gather_cat(inside.to(torch.uint8), dim=1).bool()  # gloo gathers no bool tensors
    per_step = torch.tensor([dense_retrieval_top1(d, i, c) for d, i, c in zip(dense, inside, cases)])
    return {"retrieval_top1": per_step.mean().item(), **embedding_health(dense[:, 0][inside], dense[:, 1][inside])}

"""Multi-positive InfoNCE for global and dense CMCL embeddings, cross-rank gather, and metrics.

Embeddings arrive L2-normalised; every computation here runs in float32, also under autocast.
References: Oord et al. 2018 (InfoNCE), Chen et al. 2020 (SimCLR NT-Xent), Wang & Isola 2020
(alignment and uniformity).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

# finite stand-in for -inf: a row without negatives must give a zero loss, not NaN gradients
_MASKED = -1e9


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


def near_pairs(positions: torch.Tensor, radius: float) -> torch.Tensor:
    """positions (B, M, d) -> (B, M, M) bool: locations of one sample closer than ``radius`` (self included)."""
    p = positions.float()
    return torch.cdist(p, p) < radius


def multi_positive_info_nce(anchors: torch.Tensor, candidates: torch.Tensor, anchor_index: torch.Tensor,
                            temperature: float, near: torch.Tensor | None = None,
                            case_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE over views.

    anchors (V, B, M, D): V views of B samples at M locations (M = 1 for global embeddings).
    candidates (V, N, M, D): the same for all N samples of all ranks; anchors[:, b] == candidates[:, anchor_index[b]].
    near (B, M, M) bool or None: same-sample location pairs that are neither positive nor negative;
    None means no location of the anchor's own sample is a negative.
    case_ids (N,) or None: samples cut from the same case as the anchor's (other patches, same anatomy)
    are no negatives either; None treats every sample as its own case.

    For anchor (v, b, m) and each positive (w, b, m), w != v:
        l = -s_p / t + log(exp(s_p / t) + sum_{n in negatives} exp(s_n / t))
    negatives = every view and location of the other samples, plus, when ``near`` is given, the
    locations m' != m of the same sample with not near[b, m, m'] in every view. Returns the mean of l
    over all anchors and positives (for V = 2 and M = 1: SimCLR's NT-Xent).
    """
    with torch.autocast(anchors.device.type, enabled=False):  # float32 also inside an autocast region
        return _info_nce(anchors.float(), candidates.float(), anchor_index, temperature, near, case_ids)


def _info_nce(a: torch.Tensor, c: torch.Tensor, anchor_index: torch.Tensor, temperature: float,
              near: torch.Tensor | None, case_ids: torch.Tensor | None) -> torch.Tensor:
    v, b, m, d = a.shape
    n = c.shape[1]
    if case_ids is None:
        case_ids = torch.arange(n, device=a.device)
    other_case = (case_ids[anchor_index][:, None] != case_ids[None, :])[None, :, None, None, :, None]
    logits = (a.reshape(-1, d) @ c.reshape(-1, d).T).view(v, b, m, v, n, m) / temperature
    same = (anchor_index[:, None] == torch.arange(n, device=a.device))[None, :, None, None, :, None]
    negative = other_case
    if near is not None:
        eye = torch.eye(m, dtype=torch.bool, device=a.device)
        negative = negative | (same & ~(near | eye)[None, :, :, None, None, :])
    lse_negative = logits.masked_fill(~negative, _MASKED).flatten(3).logsumexp(dim=3)  # (V, B, M)
    positives = c[:, anchor_index]  # (V, B, M, D)
    pos_logits = torch.einsum("vbmd,wbmd->vwbm", a, positives) / temperature  # (V, V, B, M)
    terms = torch.logaddexp(pos_logits, lse_negative[:, None]) - pos_logits
    # mean over w != v by weighting, not boolean indexing: a mask index makes the host wait for the device
    off_diagonal = 1.0 - torch.eye(v, device=a.device)
    return (terms * off_diagonal[:, :, None, None]).sum() / (v * (v - 1) * b * m)


def retrieval_top1(queries: torch.Tensor, keys: torch.Tensor, ignored: torch.Tensor | None = None) -> float:
    """queries, keys (N, D), row i of both from the same sample: fraction whose nearest key is its own.

    ignored (N, N) bool: keys that are neither right nor wrong for a query (for example other patches
    of the query's case); the diagonal is never ignored.
    """
    similarity = queries.float() @ keys.float().T
    own = torch.arange(len(queries), device=queries.device)
    if ignored is not None:
        similarity = similarity.masked_fill(ignored & (own[:, None] != own[None, :]), _MASKED)
    return (similarity.argmax(dim=1) == own).float().mean().item()


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


def cmcl_loss(out: dict[str, torch.Tensor], temperature: float, weight_global: float, weight_dense: float,
              exclusion_radius: float, case_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss terms of one CMCLModel output, negatives gathered from every rank.

    case_ids (B,): an integer per sample naming its case, equal on every rank for the same case.

    Returns 'loss' = weight_global * 'loss_global' + weight_dense * 'loss_dense' (terms with weight 0
    are absent), all float32 scalars.
    """
    terms = {}
    if case_ids is not None:
        case_ids, _ = gather_samples(case_ids, dim=0)
    if "global" in out:
        g = out["global"][:, :, None]  # (V, B, 1, D)
        candidates, index = gather_samples(g)
        terms["loss_global"] = multi_positive_info_nce(g, candidates, index, temperature, case_ids=case_ids)
    if "dense" in out:
        candidates, index = gather_samples(out["dense"])
        near = near_pairs(out["positions"], exclusion_radius)
        terms["loss_dense"] = multi_positive_info_nce(out["dense"], candidates, index, temperature, near, case_ids)
    weights = {"loss_global": weight_global, "loss_dense": weight_dense}
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms

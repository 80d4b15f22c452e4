"""The CMCL loss: multi-positive InfoNCE over the global and dense embeddings of the views, negatives gathered
from every rank. ``CMCLLoss`` is what the trainer's ``_build_loss`` returns, as nnU-Net's own loss variants do.

Embeddings arrive L2-normalised; every computation here runs in float32, also under autocast.
References: Oord et al. 2018 (InfoNCE), Chen et al. 2020 (SimCLR NT-Xent).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from nnunet_cmcl.dist import all_gather_cat, distributed, gather_samples
from nnunet_cmcl.pretraining.config import CMCLConfig

# finite stand-in for -inf: a row without negatives must give a zero loss, not NaN gradients
MASKED = -1e9


def near_pairs(positions: torch.Tensor, radius: float) -> torch.Tensor:
    """positions (B, M, d) -> (B, M, M) bool: locations of one sample closer than ``radius`` (self included)."""
    p = positions.float()
    return torch.cdist(p, p) < radius


def multi_positive_info_nce(anchors: torch.Tensor, candidates: torch.Tensor, anchor_index: torch.Tensor,
                            temperature: float, near: torch.Tensor | None = None,
                            case_ids: torch.Tensor | None = None,
                            extra_negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
                            valid: tuple[torch.Tensor, torch.Tensor] | None = None,
                            max_candidates: int = 0, anchor_start: int = 0) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE over views.

    anchors (V, B, M, D): V views of B samples at M locations (M = 1 for global embeddings).
    candidates (V, N, M, D): the same for all N samples of all ranks; anchors[:, b] == candidates[:, anchor_index[b]].
    near (B, M, M) bool or None: same-sample location pairs that are neither positive nor negative;
    None means no location of the anchor's own sample is a negative.
    case_ids (N,) or None: samples cut from the same case as the anchor's (other patches, same anatomy)
    are no negatives either; None treats every sample as its own case.
    extra_negatives (keys (Q, D), usable (B, Q) bool) or None: more negatives for every anchor of sample b, the
    usable keys (a queue of earlier steps' keys, masked where they come from the anchor's case).
    valid (anchors' (B, M) bool, candidates' (N, M) bool) or None: the locations that take part (inside the image);
    an invalid location is no anchor, positive or negative. None: all take part.

    For anchor (v, b, m) and each positive (w, b, m), w != v:
        l = -s_p / t + log(exp(s_p / t) + sum_{n in negatives} exp(s_n / t))
    negatives = every view and location of the other samples, plus, when ``near`` is given, the
    locations m' != m of the same sample with not near[b, m, m'] in every view. Returns the mean of l
    over all valid anchors and their positives (for V = 2 and M = 1: SimCLR's NT-Xent); 0, with a gradient path,
    when no anchor is valid.

    max_candidates > 0 bounds the candidates an anchor is scored against: when the N samples hold more than
    max_candidates location embeddings (V * N * M), they are cut into consecutive groups of
    G = max(1, max_candidates // (V * M)) samples, and an anchor's negatives are those of its own group. The
    logits then grow as B * G, not (B * N), so a 2d batch of a hundred samples stays within memory.
    ``anchor_start``: the index of anchors[:, 0] among the N samples (this rank's first sample; the anchors
    are consecutive), so every rank cuts the same groups without asking the device.
    """
    with torch.autocast(anchors.device.type, enabled=False):  # float32 also inside an autocast region
        a, c = anchors.float(), candidates.float()
        v, b, m = a.shape[:3]
        n = c.shape[1]
        group = max(1, max_candidates // (v * m)) if max_candidates > 0 else n
        if group >= n:
            return _mean(*_info_nce(a, c, anchor_index, temperature, near, case_ids, extra_negatives, valid))
        if case_ids is None:
            case_ids = torch.arange(n, device=a.device)
        total, count = 0.0, 0.0
        for first in range(anchor_start // group * group, anchor_start + b, group):
            lo, hi = max(first, anchor_start) - anchor_start, min(first + group, anchor_start + b) - anchor_start
            last = min(first + group, n)
            index = torch.arange(lo + anchor_start - first, hi + anchor_start - first, device=a.device)
            extra = None if extra_negatives is None else (extra_negatives[0], extra_negatives[1][lo:hi])
            part = None if valid is None else (valid[0][lo:hi], valid[1][first:last])
            t, k = _info_nce(a[:, lo:hi], c[:, first:last], index, temperature,
                             None if near is None else near[lo:hi], case_ids[first:last], extra, part)
            total, count = total + t, count + k
        return _mean(total, count)


def _mean(total: torch.Tensor, count: torch.Tensor | float) -> torch.Tensor:
    """total / count, the count at least 1: 0, not NaN, without any valid anchor. A count known on the host stays
    a Python number: a tensor made from it would be one more copy to the device every step."""
    return total / (count.clamp(min=1.0) if torch.is_tensor(count) else max(count, 1.0))


def _info_nce(a: torch.Tensor, c: torch.Tensor, anchor_index: torch.Tensor, temperature: float,
              near: torch.Tensor | None, case_ids: torch.Tensor | None,
              extra_negatives: tuple[torch.Tensor, torch.Tensor] | None,
              valid: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(sum of the loss terms, their count) of multi_positive_info_nce, so groups can be pooled."""
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
    if valid is not None:
        negative = negative & valid[1][None, None, None, None]  # (N, M): an outside candidate is no negative
    lse_negative = logits.masked_fill(~negative, MASKED).flatten(3).logsumexp(dim=3)  # (V, B, M)
    if extra_negatives is not None:
        keys, usable = extra_negatives
        extra = (a @ keys.float().T / temperature).masked_fill(~usable[None, :, None, :], MASKED)  # (V, B, M, Q)
        lse_negative = torch.logaddexp(lse_negative, extra.logsumexp(dim=3))
    positives = c[:, anchor_index]  # (V, B, M, D)
    pos_logits = torch.einsum("vbmd,wbmd->vwbm", a, positives) / temperature  # (V, V, B, M)
    terms = torch.logaddexp(pos_logits, lse_negative[:, None]) - pos_logits
    # mean over w != v by weighting, not boolean indexing: a mask index makes the host wait for the device
    off_diagonal = 1.0 - torch.eye(v, device=a.device)
    weights = off_diagonal[:, :, None, None].expand(v, v, b, m)
    if valid is None:
        return (terms * weights).sum(), float(v * (v - 1) * b * m)
    # weights, not indexing, and a count clamped to 1 by the caller: fixed shapes, and 0 (not NaN) without any
    # valid anchor
    weights = weights * valid[0].to(terms.dtype)
    return (terms * weights).sum(), weights.sum()


class CMCLLoss(nn.Module):
    """weight_global * global InfoNCE + weight_dense * dense InfoNCE of one CMCLModel output.

    bottleneck_spacing (d,): physical size of a bottleneck voxel per axis; the dense exclusion radius is measured
    in the finest of them (None: isotropic).

    forward(out, case_ids, queue): ``out`` holds 'global' (V, B, D) and/or 'dense' (V, B, M, D) with 'positions'
    (B, M, d), and any 'dense_stage{k}' with 'positions_stage{k}' (``dense_stages``), each dense term with its
    'inside' / 'inside_stage{k}' (B, M) bool: with ``dense_inside_image`` the locations outside the image are no
    anchors, positives or negatives (absent: all count); each dense anchor is scored against at most
    ``dense_max_candidates`` location embeddings (consecutive groups of samples, multi_positive_info_nce); case_ids (B,) is an integer
    per sample naming its case, equal on every rank for the same case (other patches of one case are no
    negatives); queue (keys (Q, D), case ids (Q,), filled (Q,)) or None: more negatives for the global term
    (``KeyQueue.negatives()``), those of the anchor's case masked. Returns 'loss' and
    its terms 'loss_global', 'loss_dense', 'loss_dense_stage{k}' (terms of weight 0 are absent), all float32
    scalars.
    """

    def __init__(self, config: CMCLConfig, bottleneck_spacing: Sequence[float] | None = None):
        super().__init__()
        self.temperature = config.temperature
        self.weights = {"loss_global": config.weight_global, "loss_dense": config.weight_dense}
        self.exclusion_radius = config.dense_exclusion_radius
        self.mask_outside = config.dense_inside_image
        self.max_candidates = config.dense_max_candidates
        # distances in units of the finest axis' bottleneck voxel, so the radius means the same physical distance
        # along every axis of anisotropic data (a 3 x 1 x 1 mm scan's bottleneck voxels are 3x longer along z)
        spacing = torch.tensor(bottleneck_spacing if bottleneck_spacing is not None else [1.0], dtype=torch.float)
        self.register_buffer("position_scale", spacing / spacing.min(), persistent=False)

    def forward(self, out: dict[str, torch.Tensor], case_ids: torch.Tensor | None = None,
                queue: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        terms = {}
        own_cases = case_ids
        if case_ids is not None:
            case_ids, _ = gather_samples(case_ids, dim=0)
        if "global" in out:
            g = out["global"][:, :, None]  # (V, B, 1, D)
            candidates, index = gather_samples(g)
            extra = None
            if queue is not None:
                keys, key_cases, filled = queue
                usable = filled[None] if own_cases is None else filled[None] & (key_cases[None] != own_cases[:, None])
                extra = (keys, usable.expand(g.shape[1], -1))
            terms["loss_global"] = multi_positive_info_nce(g, candidates, index, self.temperature, case_ids=case_ids,
                                                           extra_negatives=extra)
        for key in [k for k in out if k.startswith("dense")]:  # the bottleneck's, then any stage's above it
            positions = out[key.replace("dense", "positions")]
            candidates, index = gather_samples(out[key])
            near = near_pairs(positions * self.position_scale, self.exclusion_radius)
            inside = out.get(key.replace("dense", "inside")) if self.mask_outside else None
            valid = None
            if inside is not None:  # gloo gathers no bool tensors
                valid = (inside, all_gather_cat(inside.to(torch.uint8), dim=0).bool())
            # this rank's samples start at rank * B of the gathered ones (gather_samples), known without the device
            start = dist.get_rank() * out[key].shape[1] if distributed() else 0
            terms[f"loss_{key}"] = multi_positive_info_nce(out[key], candidates, index, self.temperature, near,
                                                           case_ids, valid=valid, max_candidates=self.max_candidates,
                                                           anchor_start=start)
        # every dense term (the bottleneck's and each stage's above it) has weight_dense
        terms["loss"] = sum(self.weights.get(k, self.weights["loss_dense"]) * v for k, v in terms.items())
        return terms

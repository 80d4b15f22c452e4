"""Validation metrics of the dense embeddings: finite on the default (dense-only) outputs, std 0 on collapse."""
import math

import torch
import torch.nn.functional as F

from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.metrics import (UNIFORMITY_SAMPLES, dense_retrieval_top1, dense_validation_metrics,
                                             embedding_health, other_samples_of_same_case, retrieval_top1)

S, V, B, M, D = 3, 3, 2, 8, 16


def dense_outputs(seed=0):
    """What validation_step keeps of S steps: dense (S, V, B, M, D), inside (S, B, M), cases (S, B)."""
    g = torch.Generator().manual_seed(seed)
    dense = F.normalize(torch.randn(S, V, B, M, D, generator=g), dim=-1)
    inside = torch.rand(S, B, M, generator=g) < 0.7
    cases = torch.randint(0, 3, (S, B), generator=g)
    return dense, inside, cases


def test_dense_metrics_are_finite_and_collapse_has_std_zero():
    dense, inside, cases = dense_outputs()
    metrics = dense_validation_metrics(dense, inside, cases)
    assert set(metrics) == {"retrieval_top1", "embedding_std", "alignment", "uniformity"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["embedding_std"] > 5 * CMCLConfig().collapse_std_threshold  # random unit vectors are spread
    collapsed = F.normalize(torch.ones_like(dense), dim=-1)  # every location the same embedding
    metrics = dense_validation_metrics(collapsed, inside, cases)
    assert metrics["embedding_std"] < CMCLConfig().collapse_std_threshold
    assert metrics["alignment"] == 0.0 and metrics["uniformity"] > -1e-6  # uniformity's collapse value is 0


def test_dense_retrieval_is_the_mean_of_each_steps_batch():
    # one process: the per-batch retrieval of before, averaged over the steps
    dense, inside, cases = dense_outputs(1)
    expected = []
    for d, i, c in zip(dense, inside, cases):
        ignored = other_samples_of_same_case(c.repeat_interleave(M), torch.arange(B).repeat_interleave(M))
        expected.append(retrieval_top1(d[0].flatten(0, 1), d[1].flatten(0, 1), ignored, i.flatten()))
    assert dense_retrieval_top1(dense[0], inside[0], cases[0]) == expected[0]
    assert dense_validation_metrics(dense, inside, cases)["retrieval_top1"] == torch.tensor(expected).mean().item()


def test_embedding_health_on_few_and_on_many_embeddings():
    assert all(math.isnan(v) for v in embedding_health(torch.ones(1, D), torch.ones(1, D)).values())
    z = F.normalize(torch.randn(3 * UNIFORMITY_SAMPLES, 4), dim=-1)  # uniformity on evenly spaced rows
    assert all(math.isfinite(v) for v in embedding_health(z, z).values())

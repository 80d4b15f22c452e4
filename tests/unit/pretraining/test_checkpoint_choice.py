"""Which pretraining checkpoint is the best: a NaN score never blocks or wins."""
from nnunet_cmcl.pretraining.trainer import is_improvement


def test_best_checkpoint_is_not_blocked_by_a_nan_score():
    assert is_improvement(0.3, None) and is_improvement(0.3, float("nan")) and is_improvement(0.4, 0.3)
    assert not is_improvement(float("nan"), None) and not is_improvement(float("nan"), 0.3)
    assert not is_improvement(0.3, 0.3)

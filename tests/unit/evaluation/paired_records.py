"""Constructed study records for the rules read off paired rows (the defaults, the goal)."""
from nnunet_cmcl.evaluation.compare import overall_dice


def paired_records(effects: dict[str, dict[int, dict[str, float]]]) -> list[dict]:
    """``effects[arm][n_labeled][class]`` added to a Dice common to all arms (classes "1" and "2"), 2 seeds x 6
    cases a regime, with a per-case spread the arms share: each paired difference is the effect itself."""
    out = []
    for arm, by_regime in effects.items():
        for n_labeled, effect in by_regime.items():
            for seed in (0, 1):
                for i in range(6):
                    dice = {k: 0.5 + 0.03 * i + effect.get(k, 0.0) + 0.002 * ((i * 7 + seed) % 3) for k in "12"}
                    out.append({"arm": arm, "trainer": f"T_{arm}", "fold": 10 + seed + 2 * n_labeled,
                                "source_fold": 0, "fraction": n_labeled / 16, "n_labeled": n_labeled, "seed": seed,
                                "case": f"c{i}", "dice": {**dice, "mean": overall_dice(dice)}})
    return out

"""The missing-modality part of the study report: the mean over absent conditions, paired against the baseline
with stats.py's hierarchical CI, each condition's Dice, and the heatmap."""
import json
import math

import pytest

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import overall_dice
from nnunet_cmcl.evaluation.missing_report import ALL_MODALITIES, mean_over_conditions, missing_section
from nnunet_cmcl.evaluation.stats import study_statistics
from nnunet_cmcl.evaluation.study_report import write_study_report

NAN = float("nan")
PNG = b"\x89PNG\r\n\x1a\n"


def _records(shift: float, cases="abc", arms=("base", "cand")) -> list[dict]:
    """Two arms x two seeds x cases, classes 1 and 2; cand is 0.1 above base in class 1; everything + shift."""
    out = []
    for arm in arms:
        for seed in (0, 1):
            for i, case in enumerate(cases):
                dice = {"1": 0.5 + 0.1 * i + shift + (0.1 if arm == "cand" else 0), "2": 0.4 + shift + 0.01 * seed}
                out.append({"arm": arm, "trainer": f"T_{arm}", "fold": 10 + seed, "source_fold": 0,
                            "fraction": 1.0, "n_labeled": 8, "seed": seed, "case": case,
                            "dice": {**dice, "mean": overall_dice(dice)}})
    return out


def test_the_mean_over_conditions_is_per_unit_and_leaves_nan_out():
    t1, t2 = _records(-0.2), _records(-0.1)
    t2[0]["dice"] = {**t2[0]["dice"], "2": NAN}
    means = mean_over_conditions({"missing T1": t1, "missing T2": t2})
    assert len(means) == len(t1)
    first = means[0]
    assert first["dice"]["1"] == pytest.approx((t1[0]["dice"]["1"] + t2[0]["dice"]["1"]) / 2)
    assert first["dice"]["2"] == pytest.approx(t1[0]["dice"]["2"])  # NaN left out
    assert first["dice"]["mean"] == pytest.approx((t1[0]["dice"]["mean"] + t2[0]["dice"]["mean"]) / 2)
    assert {k: first[k] for k in ("arm", "seed", "case", "fold")} == {k: t1[0][k] for k in ("arm", "seed", "case",
                                                                                             "fold")}
    with pytest.raises(CMCLInputError, match="differ in the unit"):
        mean_over_conditions({"missing T1": t1, "missing T2": t2[1:]})


def test_the_report_pairs_the_mean_over_conditions_against_the_baseline(tmp_path):
    conditions = {"missing T1": _records(-0.2), "missing T2": _records(-0.1), "missing T1+T2": _records(-0.3)}
    missing = {ALL_MODALITIES: study_statistics(_records(0), "base", n_bootstrap=200)}
    missing.update({c: study_statistics(r, "base", n_bootstrap=200) for c, r in conditions.items()})
    over = study_statistics(mean_over_conditions(conditions), "base", n_bootstrap=200)
    cand = next(r for r in over["rows"] if r["arm"] == "cand" and r["class"] == "1" and r["kind"] == "arm")
    assert cand["diff"] == pytest.approx(0.1) and cand["ci_low"] == pytest.approx(0.1)
    lines = "\n".join(missing_section(missing, over))
    assert "Mean over the 3 absent-modality conditions" in lines and "| missing T1+T2 |" in lines
    assert lines.startswith("## Missing modalities (8 labeled cases, seeds 0, 1)")
    # validated on the first seed only, as the presets do: the heading says so
    one_seed = {c: study_statistics([r for r in _records(0) if r["seed"] == 0], "base", n_bootstrap=50)
                for c in (ALL_MODALITIES, "missing T1")}
    assert missing_section(one_seed)[0] == "## Missing modalities (8 labeled cases, seed 0)"
    assert lines.index(f"| {ALL_MODALITIES} |") < lines.index("| missing T1 |")
    paths = write_study_report(missing[ALL_MODALITIES], str(tmp_path), {"1": "edema", "2": "tumor", "mean": "mean"},
                               None, missing, None, over)
    for key in ("missing_modality", "missing_heatmap"):
        with open(paths[key], "rb") as fh:
            assert fh.read(8) == PNG
    data = json.loads(open(paths["json"]).read())
    assert set(data["missing_modality"]) == {ALL_MODALITIES, *conditions}
    mean_row = next(r for r in data["missing_modality_over_conditions"]["rows"] if r["arm"] == "cand"
                    and r["class"] == "mean" and r["kind"] == "arm")
    assert not math.isnan(mean_row["diff"]) and "Mean over the 3" in open(paths["md"]).read()

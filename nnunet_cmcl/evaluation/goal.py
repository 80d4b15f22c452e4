"""The product's goal, checked on a study's paired rows as docs/method.md states it (fixed before the study's
results), so whether CMCL met it is read off by the rule and not from the tables:

1. **Few labels**: CMCL at least ``GOAL_GAIN`` mean Dice ahead of nnU-Net with the fewest labeled cases, its
   hierarchical CI excluding 0.
2. **All labels**: CMCL no worse than nnU-Net with every labeled case: not behind with a CI that excludes 0.
3. **Reconstruction**: CMCL ahead of reconstruction-only pretraining, paired on the same labeled subsets: ahead
   with a CI that excludes 0 in at least one regime both ran, behind with such a CI in none.

Each criterion is judged on the mean over the classes; the regions where CMCL is ahead of or behind nnU-Net with
a CI that excludes 0 are listed beside (what the invariance across modalities costs or gives, region by region).
"""
from __future__ import annotations

import json
import os

from nnunet_cmcl.atomic import write_text_atomically
from nnunet_cmcl.evaluation.compare import MEAN
from nnunet_cmcl.evaluation.formatting import DASH, diff_cell, is_nan, nan_to_none, regime_cell, where_cell
from nnunet_cmcl.evaluation.stats import study_statistics

GOAL_GAIN = 0.02  # the field's gains from pretraining with few labels: about +2 to +3 Dice (docs/method.md)
METHOD, RECONSTRUCTION = "CMCL", "reconstruction"  # the arms' labels in the presets


def reconstruction_records(records: list[dict]) -> list[dict]:
    """CMCL's and reconstruction's records in the regimes both ran: their own study, reconstruction its baseline."""
    regimes = {arm: {r["n_labeled"] for r in records if r["arm"] == arm} for arm in (METHOD, RECONSTRUCTION)}
    both = regimes[METHOD] & regimes[RECONSTRUCTION]
    return [r for r in records if r["arm"] in (METHOD, RECONSTRUCTION) and r["n_labeled"] in both]


def _mean_rows(result: dict, arm: str) -> list[dict]:
    return sorted((r for r in result["rows"] if r["kind"] == "arm" and r["arm"] == arm and r["class"] == MEAN),
                  key=lambda r: r["n_labeled"])


def _tested(row: dict) -> bool:
    return not is_nan(row["ci_low"])  # NaN: too few units for a CI


def _criterion(name: str, rows: list[dict], met: bool, wanted: str) -> dict:
    """A criterion's verdict and its comparisons, each naming the seeds it covers."""
    return {"criterion": name, "wanted": wanted, "met": met,
            "comparisons": [f"{regime_cell(r)}: {diff_cell(r)}" for r in rows]}


def check_goal(result: dict, versus_reconstruction: dict | None, class_names: dict) -> dict:
    """``result``: study_statistics against nnU-Net; ``versus_reconstruction``: study_statistics of
    ``reconstruction_records`` with reconstruction as its baseline (None: no regime both ran). Returns the three
    criteria and the regions; a criterion without a tested comparison (too few runs yet) is not met."""
    baseline, regimes = result["baseline_arm"], [g["n_labeled"] for g in result["regimes"]]
    rows = {r["n_labeled"]: r for r in _mean_rows(result, METHOD) if _tested(r)}
    fewest, most = rows.get(min(regimes)), rows.get(max(regimes))  # None: CMCL has no tested runs there
    few = _criterion("few labels", [fewest] if fewest else [],
                     bool(fewest) and fewest["diff"] >= GOAL_GAIN and fewest["ci_low"] > 0,
                     f"CMCL - {baseline} >= +{GOAL_GAIN} with the fewest labeled cases, its CI excluding 0")
    every = _criterion("all labels", [most] if most else [], bool(most) and most["ci_high"] >= 0,
                       f"CMCL - {baseline} with every labeled case: not behind with a CI excluding 0")
    paired = [r for r in _mean_rows(versus_reconstruction, METHOD) if _tested(r)] if versus_reconstruction else []
    ahead = any(r["ci_low"] > 0 for r in paired) and not any(r["ci_high"] < 0 for r in paired)
    recon = _criterion("reconstruction", paired, ahead,
                       "CMCL - reconstruction ahead with a CI excluding 0 in a regime, behind in none")
    regions = {"ahead": [], "behind": []}
    for r in result["rows"]:
        if r["kind"] == "arm" and r["arm"] == METHOD and r["class"] != MEAN and _tested(r):
            if r["ci_low"] > 0:
                regions["ahead"].append(where_cell(r, class_names))
            elif r["ci_high"] < 0:
                regions["behind"].append(where_cell(r, class_names))
    criteria = [few, every, recon]
    return {"criteria": criteria, "met": all(c["met"] for c in criteria), "regions": regions,
            "seeds": sorted({str(s) for g in result["regimes"] for s in g["seeds"]})}


def goal_of(result: dict, records: list[dict], class_names: dict) -> dict | None:
    """The goal checked on a study (``result``: study_statistics of ``records`` against nnU-Net), CMCL paired with
    reconstruction on the same records; None for a study without both arms."""
    if METHOD not in result["arms"] or RECONSTRUCTION not in result["arms"]:
        return None
    paired = reconstruction_records(records)
    versus = study_statistics(paired, RECONSTRUCTION, result["n_bootstrap"], result["rng_seed"]) if paired else None
    return check_goal(result, versus, class_names)


def goal_markdown(goal: dict) -> str:
    lines = ["## The goal, by the rule of docs/method.md", "",
             f"Seeds: {', '.join(goal['seeds'])} (each comparison names those it covers). Mean Dice over the "
             f"classes, paired differences with hierarchical 95% CIs.", "",
             "| criterion | wanted | measured | met |", "|---|---|---|---|"]
    for c in goal["criteria"]:
        lines.append(f"| {c['criterion']} | {c['wanted']} | {'; '.join(c['comparisons']) or DASH} | "
                     f"{'yes' if c['met'] else 'no'} |")
    lines += ["", f"Goal {'met' if goal['met'] else 'not met'}.", "",
              "Regions where CMCL is ahead of nnU-Net with a CI that excludes 0: "
              f"{'; '.join(goal['regions']['ahead']) or 'none'}.",
              "Regions where it is behind with such a CI: "
              f"{'; '.join(goal['regions']['behind']) or 'none'}."]
    return "\n".join(lines) + "\n"


def write_goal(goal: dict, output_folder: str) -> str:
    """goal.md and goal.json in the report's folder; returns the markdown's path."""
    path = os.path.join(output_folder, "goal.md")
    write_text_atomically(goal_markdown(goal), path)
    write_text_atomically(json.dumps(nan_to_none(goal), indent=2, allow_nan=False) + "\n",
                          os.path.join(output_folder, "goal.json"))
    return path

"""The rule that decides the method's defaults from a study's paired rows (docs/method.md, fixed before the runs),
applied as written, so the decision is the rule's and not a reading of the tables.

- An alternative paired with a default (rows of kind 'control': ``arm`` the alternative, ``against`` the default)
  replaces it only where it is ahead with a hierarchical CI that excludes 0 (``ci_low`` > 0) in at least one label
  regime, on the class mean or on one class, and behind with such a CI (``ci_high`` < 0) in none.
- Modality dropout's probability (a pair also validated without modalities): the alternative probability replaces
  the default only if, with every modality present, it costs at most ``DROPOUT_COST`` mean Dice against the
  baseline arm at all labels, and over the absent conditions (the mean over them) it is ahead of the default with
  a CI that excludes 0.
"""
from __future__ import annotations

import json
import os

from nnunet_cmcl.atomic import write_text_atomically
from nnunet_cmcl.evaluation.compare import MEAN
from nnunet_cmcl.evaluation.formatting import DASH, diff_cell, format_number, is_nan, nan_to_none, where_cell

DROPOUT_COST = 0.01  # docs/method.md: "the probabilities that cost at most 0.01 Dice with every modality present"


def _paired_rows(result: dict, arm: str, default: str, n_labeled=None, key: str | None = None) -> list[dict]:
    return [r for r in result["rows"] if r["kind"] == "control" and r["arm"] == arm and r["against"] == default
            and (n_labeled is None or r["n_labeled"] == n_labeled) and (key is None or r["class"] == key)]


def _paired_decision(result: dict, arm: str, default: str, class_names: dict) -> dict:
    rows = [r for r in _paired_rows(result, arm, default) if not is_nan(r["ci_low"])]  # NaN: no CI, no test
    ahead = [where_cell(r, class_names) for r in rows if r["ci_low"] > 0]
    behind = [where_cell(r, class_names) for r in rows if r["ci_high"] < 0]
    return {"arm": arm, "default": default, "rule": "paired", "comparisons": len(rows), "ahead": ahead,
            "behind": behind, "replaces_default": bool(ahead) and not behind}


def _cost(result: dict, arm: str, n_labeled: int) -> dict | None:
    """The arm's mean-Dice row against the study's baseline arm, every modality present."""
    return next((r for r in result["rows"] if r["kind"] == "arm" and r["arm"] == arm and r["class"] == MEAN
                 and r["n_labeled"] == n_labeled), None)


def _dropout_decision(result: dict, over_conditions: dict, arm: str, default: str, class_names: dict) -> dict:
    largest = max(g["n_labeled"] for g in result["regimes"])
    cost, default_cost = _cost(result, arm, largest), _cost(result, default, largest)
    absent = next(iter(_paired_rows(over_conditions, arm, default, largest, MEAN)), None)
    affordable = cost is not None and cost["diff"] >= -DROPOUT_COST
    ahead = absent is not None and absent["ci_low"] > 0
    return {"arm": arm, "default": default, "rule": "dropout", "comparisons": 1,
            "ahead": [f"over the absent conditions: {diff_cell(absent)}"] if ahead else [],
            "behind": [] if affordable else [f"every modality present, against {result['baseline_arm']}: "
                                             f"{format_number(cost['diff'], '+.4f') if cost else DASH}"],
            "over_absent": absent and diff_cell(absent), "cost": cost and cost["diff"],
            "default_cost": default_cost and default_cost["diff"], "baseline": result["baseline_arm"],
            "replaces_default": affordable and ahead}


def decide_defaults(result: dict, over_conditions: dict | None, class_names: dict) -> list[dict]:
    """One decision per paired (alternative, default), in the study's order. ``result``: study_statistics of the
    runs with every modality; ``over_conditions``: of the mean over the absent conditions, whose paired rows mark
    the pairs the dropout rule decides (None: no pair is)."""
    absent = {(r["arm"], r["against"]) for r in over_conditions["rows"] if r["kind"] == "control"} \
        if over_conditions else set()
    pairs = dict.fromkeys((r["arm"], r["against"]) for r in result["rows"] if r["kind"] == "control")
    return [_dropout_decision(result, over_conditions, arm, default, class_names) if (arm, default) in absent
            else _paired_decision(result, arm, default, class_names) for arm, default in pairs]


def decisions_markdown(decisions: list[dict]) -> str:
    lines = ["## The defaults, by the rule of docs/method.md", "",
             "An alternative replaces its default only where it is ahead with a hierarchical 95% CI that excludes 0 "
             "in at least one regime (mean or one class) and behind with such a CI in none; the dropout "
             f"probability only if it costs at most {DROPOUT_COST} mean Dice with every modality present and is "
             "ahead of the default over the absent conditions with such a CI.", "",
             "| alternative | default | comparisons | ahead | behind or too costly | decision |", "|" + "---|" * 6]
    for d in decisions:
        verdict = f"replaces {d['default']}" if d["replaces_default"] else f"{d['default']} stays"
        lines.append(f"| {d['arm']} | {d['default']} | {d['comparisons']} | {'; '.join(d['ahead']) or DASH} | "
                     f"{'; '.join(d['behind']) or DASH} | {verdict} |")
    made = sum(d["comparisons"] for d in decisions)
    return "\n".join(lines + _costly_defaults(decisions)
                     + ["", f"{made} comparisons, no correction for multiplicity (docs/method.md)."]) + "\n"


def _costly_defaults(decisions: list[dict]) -> list[str]:
    """A dropout default beyond the cost limit itself: the rule's "probabilities within the limit" may then hold
    none, and the default stays for want of an alternative that is, which the table alone would not show."""
    lines = []
    for d in decisions:
        if d["rule"] == "dropout" and not is_nan(d["default_cost"]) and d["default_cost"] < -DROPOUT_COST:
            lines += ["", f"The default {d['default']} itself costs {format_number(d['default_cost'], '+.4f')} mean "
                          f"Dice against {d['baseline']} with every modality present, beyond the {DROPOUT_COST} "
                          "limit too."]
    return lines


def write_decisions(decisions: list[dict], output_folder: str) -> str:
    """decisions.md and decisions.json in the report's folder; returns the markdown's path."""
    path = os.path.join(output_folder, "decisions.md")
    write_text_atomically(decisions_markdown(decisions), path)
    write_text_atomically(json.dumps(nan_to_none(decisions), indent=2, allow_nan=False) + "\n",
                          os.path.join(output_folder, "decisions.json"))
    return path

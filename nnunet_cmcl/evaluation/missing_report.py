"""The missing-modality part of a study's report: every all-labels model validated with modalities absent
(``evaluate-missing``), as study.md's section and two PNGs, each file written whole or not at all.

- the mean over the absent conditions: per unit (source fold, seed, case) the mean Dice over every evaluated
  subset of absent modalities (``mean_over_conditions``), then stats.study_statistics on those means, so each arm
  gets its mean Dice over subsets with a CI and the hierarchical CI of the paired difference against the baseline,
  as every other table of the study;
- each condition's class-mean Dice [CI] per arm (the normal validation, "all modalities", first);
- missing_modality.png: class-mean Dice with CI per arm and condition, grouped bars;
- missing_heatmap.png: arms x conditions, Dice as colour and number, one panel for the class mean and one per
  class or region, named as in dataset.json.
"""
from __future__ import annotations

import math
import os

import numpy as np

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import MEAN
from nnunet_cmcl.evaluation.figures import arm_color, new_figure, save_png
from nnunet_cmcl.evaluation.formatting import DASH, dice_cell, diff_cell, format_p, is_nan, wtl_cell

ALL_MODALITIES = "all modalities"  # the condition of nnU-Net's own validation
UNIT_KEYS = ("arm", "n_labeled", "source_fold", "seed", "case")


# ---------------------------------------------------------------- the mean over absent conditions

def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not is_nan(v)]
    return float(np.mean(kept)) if kept else math.nan


def mean_over_conditions(records_by_condition: dict[str, list[dict]]) -> list[dict]:
    """One record per unit with, per class key and "mean", the mean Dice over the conditions (each condition's
    NaN, reference and prediction both empty, left out of it). Every condition must have the same units."""
    if not records_by_condition:
        raise CMCLInputError("no absent-modality conditions were given; evaluate some with evaluate-missing first")
    indexed = {c: {tuple(r.get(k) for k in UNIT_KEYS): r for r in records} for c, records in
               records_by_condition.items()}
    first, units = next(iter(indexed.items()))
    for condition, by_unit in indexed.items():
        if by_unit.keys() != units.keys():
            odd = sorted(by_unit.keys() ^ units.keys(), key=str)[0]
            raise CMCLInputError(f"conditions {first} and {condition} differ in the unit {dict(zip(UNIT_KEYS, odd))}; "
                                 f"evaluate every model under every condition (evaluate-missing --subsets all)")
    means = []
    for unit, record in units.items():
        keys = list(dict.fromkeys(k for by_unit in indexed.values() for k in by_unit[unit]["dice"]))
        dice = {k: _nanmean([by_unit[unit]["dice"].get(k, math.nan) for by_unit in indexed.values()]) for k in keys}
        means.append({**record, "dice": dice})
    return means


# ---------------------------------------------------------------- markdown

def largest_regime_rows(result: dict, key: str = MEAN) -> dict[str, dict]:
    """{arm: its row of class ``key``} at the largest n_labeled (all labels): the baseline's and every arm's."""
    largest = max(g["n_labeled"] for g in result["regimes"])
    rows = [r for r in result["rows"] if r["n_labeled"] == largest and r["class"] == key
            and r["kind"] in ("baseline", "arm")]
    return {r["arm"]: r for r in rows}


def _largest_regime(missing: dict) -> str:
    """'16 labeled cases, seed 0': the regime validated without modalities and its seeds, which may be fewer than
    the study's (the first seed only, where each costs a validation per condition)."""
    n_labeled = max(g["n_labeled"] for res in missing.values() for g in res["regimes"])
    seeds = sorted({str(s) for res in missing.values() for g in res["regimes"] if g["n_labeled"] == n_labeled
                    for s in g["seeds"]})
    return f"{n_labeled} labeled cases, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"


def _arms(missing: dict) -> list[str]:
    return list(dict.fromkeys(a for res in missing.values() for a in res["arms"]))


def _absent_conditions(missing: dict) -> list[str]:
    return [c for c in missing if c != ALL_MODALITIES]


def _over_subsets_table(over: dict, n_conditions: int) -> list[str]:
    rows = largest_regime_rows(over)
    largest = max(g["n_labeled"] for g in over["regimes"])
    controls = [r for r in over["rows"] if r["n_labeled"] == largest and r["class"] == MEAN and r["kind"] == "control"]
    lines = [f"Mean over the {n_conditions} absent-modality conditions, per unit, then over cases and seeds; the "
             f"difference is paired per unit, with the hierarchical CI of the study's tables:", "",
             "| arm | mean Dice over conditions [CI] | paired with | diff [hierarchical CI] | W/T/L | Wilcoxon p | n |",
             "|" + "---|" * 7]
    for r in list(rows.values()) + controls:  # the arms against the baseline, then each against its control
        baseline = r["kind"] == "baseline"
        n = r["n_dice"] if baseline else r["n"]
        lines.append(f"| {r['arm']}{' (baseline)' if baseline else ''} | {dice_cell(r)} | "
                     f"{DASH if baseline else r['against']} | {diff_cell(r)} | {wtl_cell(r)} | "
                     f"{DASH if baseline else format_p(r['p_wilcoxon'])} | {DASH if is_nan(n) else n} |")
    return lines + [""]


def missing_section(missing: dict, over_subsets: dict | None = None) -> list[str]:
    """study.md's section: the mean over the absent conditions (when given), then each condition's Dice."""
    conditions, arms = list(missing), _arms(missing)
    rows = {c: largest_regime_rows(missing[c]) for c in conditions}
    lines = [f"## Missing modalities ({_largest_regime(missing)})", ""]
    if over_subsets is not None:
        lines += _over_subsets_table(over_subsets, len(_absent_conditions(missing)))
    lines += ["Class-mean Dice [CI] per condition (missing_heatmap.png has every class):", "",
              "| condition | " + " | ".join(arms) + " |", "|" + "---|" * (len(arms) + 1)]
    for c in conditions:
        lines.append(f"| {c} | " + " | ".join(dice_cell(rows[c][a]) if a in rows[c] else DASH for a in arms) + " |")
    return lines + [""]


# ---------------------------------------------------------------- plots

def plot_missing_bars(missing: dict, path: str) -> None:
    """Class-mean Dice with CI per arm (bars) and condition (groups)."""
    conditions, arms = list(missing), _arms(missing)
    rows = {c: largest_regime_rows(missing[c]) for c in conditions}
    fig = new_figure(max(6, 1.6 * len(conditions) * max(1, len(arms)) / 2), 4.5)
    ax = fig.subplots()
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        picked = [rows[c].get(arm) for c in conditions]
        height = np.array([r["dice"] if r else math.nan for r in picked], dtype=float)
        low = np.array([r["dice_ci_low"] if r else math.nan for r in picked], dtype=float)
        high = np.array([r["dice_ci_high"] if r else math.nan for r in picked], dtype=float)
        # a percentile CI may miss the mean of seed means slightly; error bars cannot be negative
        yerr = np.nan_to_num(np.maximum(0, [height - low, high - height]))
        ax.bar(np.arange(len(conditions)) + (i - (len(arms) - 1) / 2) * width, np.nan_to_num(height), width,
               yerr=yerr, capsize=3, color=arm_color(arms, arm), label=arm)
    ax.set_xticks(np.arange(len(conditions)), conditions, fontsize=8, rotation=30 if len(conditions) > 5 else 0)
    ax.set_ylabel("Dice (mean over classes)")
    n_labeled = sorted({max(g["n_labeled"] for g in res["regimes"]) for res in missing.values()})
    ax.set_title(f"evaluation conditions at {', '.join(map(str, n_labeled))} labeled cases, hierarchical CI")
    # below the axes: bars of Dice near 1 would hide a legend inside them
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(len(arms), 5))
    save_png(fig, path)


def plot_missing_heatmap(missing: dict, class_names: dict, path: str) -> None:
    """Arms (rows) x conditions (columns), Dice as colour (0 to 1) and number; a panel for the class mean, then
    one per class or region of dataset.json."""
    conditions, arms = list(missing), _arms(missing)
    keys = [MEAN] + [k for k in dict.fromkeys(k for res in missing.values() for k in res["classes"]) if k != MEAN]
    fig = new_figure(max(6.0, 1.5 + 0.75 * len(conditions)), (1.2 + 0.45 * len(arms)) * len(keys) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(keys), 1, squeeze=False)[:, 0])
    for ax, key in zip(axes, keys):
        rows = {c: largest_regime_rows(missing[c], key) for c in conditions}
        dice = np.array([[rows[c][a]["dice"] if a in rows[c] else math.nan for c in conditions] for a in arms],
                        dtype=float)
        image = ax.imshow(np.ma.masked_invalid(dice), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(dice):
            ax.text(j, i, DASH if math.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if not math.isnan(value) and value > 0.6 else "white")
        ax.set_yticks(np.arange(len(arms)), arms, fontsize=8)
        ax.set_xticks(np.arange(len(conditions)), [c.removeprefix("missing ") for c in conditions], fontsize=7,
                      rotation=45, ha="right")
        ax.set_title(f"Dice, {class_names.get(key, key)}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    axes[-1].set_xlabel("absent modalities (first column: none)")
    save_png(fig, path)


def write_missing_figures(missing: dict, class_names: dict, output_folder: str) -> dict[str, str]:
    """Both PNGs into ``output_folder``; returns {'missing_modality': path, 'missing_heatmap': path}."""
    paths = {key: os.path.join(output_folder, f"{key}.png") for key in ("missing_modality", "missing_heatmap")}
    plot_missing_bars(missing, paths["missing_modality"])
    plot_missing_heatmap(missing, class_names, paths["missing_heatmap"])
    return paths

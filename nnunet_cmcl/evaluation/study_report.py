"""The report of a multi-arm, multi-seed study (stats.study_statistics): markdown tables, CSV, JSON and PNG plots,
each file written whole or not at all.

- study.md: per label regime, the "mean" table and then one per class; rows: the baseline arm, the A/A row (the
  baseline against itself with seeds rotated: the noise floor), the other arms; below each table, the arms
  against their schedule-matched controls where the study has them; then convergence, missing modalities and
  wall time where given; the definitions at the end;
- study.csv: one row per label regime x class x arm (and x control); study.json: the result, NaN as null;
- dice_vs_labels.png: class-mean Dice against the number of labeled cases, one line and CI band per arm;
- paired_differences.png: per label regime, each arm's class-mean difference to the baseline with its CI, against
  the A/A noise floor (paired_differences.py; scripts/plot_study.py redraws it from study.csv);
- learning_curves.png: EMA pseudo Dice per epoch, a panel per label regime, a colour per arm, a line per seed;
- missing_modality.png and missing_heatmap.png, with the missing-modality section of study.md: missing_report.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics

import numpy as np

from nnunet_cmcl.atomic import write_text_atomically
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import MEAN
from nnunet_cmcl.evaluation.figures import arm_color, new_figure, save_png
from nnunet_cmcl.evaluation.formatting import (DASH, diff_cell, dice_cell, format_duration, format_number, format_p,
                                               is_nan, nan_to_none, wtl_cell)
from nnunet_cmcl.evaluation.missing_report import missing_section, write_missing_figures
from nnunet_cmcl.evaluation.paired_differences import plot_paired_differences
from nnunet_cmcl.evaluation.curves import CONVERGENCE_TOLERANCE

COLUMNS = ("n_labeled", "fractions", "class", "class_name", "arm", "kind", "against", "seeds", "dice", "dice_ci_low",
           "dice_ci_high", "n_dice", "n_dice_nan", "diff", "ci_low", "ci_high", "seed_diffs", "wins", "ties",
           "losses", "n", "n_nan_dropped", "p_wilcoxon", "note")
TABLE_KINDS = ("baseline", "aa", "arm")  # the rows of a regime's main table; "control" rows get a table of their own


# ---------------------------------------------------------------- text pieces

def _name(class_names: dict, key: str) -> str:
    return str(class_names.get(key, key))


def _seed(seed) -> str:
    return "unseeded" if seed is None else f"s{seed}"


def _arm_label(row: dict) -> str:
    return {"baseline": f"{row['arm']} (baseline)", "aa": f"A/A: {row['arm']}, seeds rotated",
            "control": f"{row['arm']} vs {row['against']}"}.get(row["kind"], row["arm"])


def _regime_title(regime: dict) -> str:
    fractions = ", ".join(f"{f:g}" for f in regime["fractions"])
    return f"{regime['n_labeled']} labeled cases" + (f" (fraction {fractions})" if fractions else "")


def _seed_diffs(row: dict, spec: str = "+.4f", sep: str = ", ") -> str:
    parts = []
    for d in row["seed_diffs"]:
        who = _seed(d["seed"]) if d["vs_seed"] == d["seed"] else f"{_seed(d['vs_seed'])}-{_seed(d['seed'])}"
        parts.append(f"{who} {format_number(d['diff'], spec)}")
    return sep.join(parts) or DASH


def _rows_of(result: dict, n_labeled, key: str, kinds=TABLE_KINDS) -> list[dict]:
    """The rows of ``kinds``: the baseline, then its noise floor, then the arms in study order (then the rows
    against controls)."""
    order = {"baseline": 0, "aa": 1, "arm": 2, "control": 3}
    rows = [r for r in result["rows"] if r["n_labeled"] == n_labeled and r["class"] == key and r["kind"] in kinds]
    return sorted(rows, key=lambda r: (order[r["kind"]], result["arms"].index(r["arm"])))


def _arm_rows(result: dict, n_labeled, key: str) -> dict[str, dict]:
    """{arm: its row}: the baseline's and every arm's own Dice."""
    return {r["arm"]: r for r in _rows_of(result, n_labeled, key, ("baseline", "arm"))}


# ---------------------------------------------------------------- markdown

def _table(result: dict, n_labeled, key: str, kinds=TABLE_KINDS, against: str = "baseline") -> str:
    head = f"| arm | mean Dice [CI] | diff vs {against} [hierarchical CI] | per-seed diffs | W/T/L | Wilcoxon p | n |"
    lines = [head, "|" + "---|" * 7]
    rows = _rows_of(result, n_labeled, key, kinds)
    for r in rows:
        n = r["n_dice"] if r["kind"] == "baseline" else r["n"]
        lines.append(f"| {_arm_label(r)} | {dice_cell(r)} | {diff_cell(r)} | {_seed_diffs(r)} | {wtl_cell(r)} | "
                     f"{DASH if r['kind'] == 'baseline' else format_p(r['p_wilcoxon'])} | {DASH if is_nan(n) else n} |")
    notes = [f"- {_arm_label(r)}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def _regime(result: dict, n_labeled) -> dict:
    for regime in result["regimes"]:
        if regime["n_labeled"] == n_labeled:
            return regime
    found = ", ".join(str(g["n_labeled"]) for g in result["regimes"])
    raise CMCLInputError(f"label regime {n_labeled} is not in the study (n_labeled: {found}); give one of those")


def format_study_table(result: dict, class_names: dict, regime=None) -> str:
    """The "mean" table of one label regime (``regime`` = its n_labeled), or of every regime, with headings."""
    regimes = result["regimes"] if regime is None else [_regime(result, regime)]
    blocks = [f"{_regime_title(g)}, {_name(class_names, MEAN)}:\n{_table(result, g['n_labeled'], MEAN)}"
              for g in regimes]
    return "\n\n".join(blocks)


def _regime_section(result: dict, regime: dict, class_names: dict) -> list[str]:
    seeds = ", ".join(_seed(s) for s in regime["seeds"])
    lines = [f"## {_regime_title(regime)}", "",
             f"- seeds: {seeds}; source folds: {', '.join(str(f) for f in regime['source_folds'])}; "
             f"units per arm: {regime['n_units']}"]
    if regime["arms_absent"]:
        lines.append(f"- arms without runs here: {', '.join(regime['arms_absent'])}")
    for key in [MEAN] + regime["classes"]:
        lines += ["", f"### {_name(class_names, key)}", "", _table(result, regime["n_labeled"], key)]
        if _rows_of(result, regime["n_labeled"], key, ("control",)):
            lines += ["", f"Paired with another arm ({_name(class_names, key)}): a pretrained arm against its "
                          f"schedule-matched control (what the pretrained weights do), an alternative against the "
                          f"default it would replace (what the change does)", "",
                      _table(result, regime["n_labeled"], key, ("control",), "control")]
    return lines + [""]


def _convergence_section(curves: list[dict]) -> list[str]:
    lines = ["## Convergence of the EMA pseudo Dice", "",
             "Converged: over the last fifth of the epochs the EMA pseudo Dice changed (last minus first) and ranged "
             f"(max minus min) by less than {CONVERGENCE_TOLERANCE} each.", "",
             "| arm | n_labeled | source fold | seed | epochs | converged | change over last fifth | range |",
             "|" + "---|" * 8]
    for c in curves:
        lines.append(f"| {c['arm']} | {c['n_labeled']} | {c['source_fold']} | {_seed(c.get('seed'))} | "
                     f"{c['epochs']} | {'yes' if c['converged'] else 'no'} | {format_number(c['last_fifth_change'])} | "
                     f"{format_number(c.get('last_fifth_range'))} |")
    return lines + [""]


def _wall_time_section(wall_time: dict[str, list[float]]) -> list[str]:
    lines = ["## Wall time", "",
             "Time in nnU-Net's trainer by its training logs: each run's start-up, epochs and final validation, an "
             "epoch that took more than 3 times the run's median (a paused or shared machine) counted at that bound "
             "(process start-up, the missing-modality validations and this report are not counted):", "",
             "| runs | count | median per run | total |", "|---|---|---|---|"]
    for kind, seconds in wall_time.items():
        lines.append(f"| {kind} | {len(seconds)} | {format_duration(statistics.median(seconds))} | "
                     f"{format_duration(sum(seconds))} |")
    everything = [s for seconds in wall_time.values() for s in seconds]
    return lines + [f"| all | {len(everything)} | | {format_duration(sum(everything))} |", ""]


def _markdown(result: dict, class_names: dict, curves: list[dict] | None, missing: dict | None,
              wall_time: dict[str, list[float]] | None = None, missing_over: dict | None = None) -> str:
    lines = [f"# Study: arms against {result['baseline_arm']}", "",
             f"- baseline arm: {result['baseline_arm']}", f"- arms: {', '.join(result['arms'])}",
             f"- label regimes (n_labeled): {', '.join(str(g['n_labeled']) for g in result['regimes'])}",
             f"- bootstrap: {result['n_bootstrap']} hierarchical resamples (seeds, then cases), rng seed "
             f"{result['rng_seed']}", ""]
    for regime in result["regimes"]:
        lines += _regime_section(result, regime, class_names)
    if curves:
        lines += _convergence_section(curves)
    if missing:
        lines += missing_section(missing, missing_over)
    if wall_time:
        lines += _wall_time_section(wall_time)
    lines += ["Definitions:", ""] + [f"- {k}: {v}" for k, v in result["definitions"].items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- csv and json

def _csv_value(row: dict, column: str, class_names: dict):
    if column == "class_name":
        return _name(class_names, row["class"])
    if column == "fractions":
        return ";".join(f"{f:g}" for f in row["fractions"])
    if column == "seeds":
        return ";".join(_seed(s) for s in row["seeds"])
    if column == "seed_diffs":
        return "" if not row["seed_diffs"] else _seed_diffs(row, ".6f", ";")
    return "" if is_nan(row[column]) else row[column]  # NaN as an empty cell, readable by any CSV reader


def _csv(result: dict, class_names: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for regime in result["regimes"]:
        for key in [MEAN] + regime["classes"]:
            for row in _rows_of(result, regime["n_labeled"], key, TABLE_KINDS + ("control",)):
                writer.writerow([_csv_value(row, c, class_names) for c in COLUMNS])
    return buf.getvalue()


def _json(result: dict, class_names: dict, curves: list[dict] | None, missing: dict | None,
          missing_over: dict | None = None) -> str:
    out = {**result, "class_names": class_names}
    if curves:  # the per-epoch lists stay in the checkpoints; the convergence verdicts come here
        per_epoch = ("ema_fg_dice", "mean_fg_dice", "train_losses", "val_losses")
        out["learning_curves"] = [{k: v for k, v in c.items() if k not in per_epoch} for c in curves]
    if missing:
        out["missing_modality"] = missing
    if missing_over:
        out["missing_modality_over_conditions"] = missing_over
    return json.dumps(nan_to_none(out), indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------- plots

def _plot_dice_vs_labels(result: dict, path: str) -> None:
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    regimes = result["regimes"]
    x = np.arange(len(regimes))  # categorical: label counts such as 2, 4, 80 are unevenly spread
    by_regime = [_arm_rows(result, g["n_labeled"], MEAN) for g in regimes]
    for arm in result["arms"]:
        rows = [arm_rows.get(arm) for arm_rows in by_regime]
        y, low, high = ([r[k] if r else math.nan for r in rows] for k in ("dice", "dice_ci_low", "dice_ci_high"))
        color = arm_color(result["arms"], arm)
        ax.plot(x, y, "-o", color=color, label=arm, markersize=4)
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_xticks(x, [_regime_title(g).replace(" (", "\n(") for g in regimes], fontsize=8)
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("Dice (mean over classes)")
    ax.set_title(f"mean over seeds and cases, {int(100 * result['confidence_level'])}% hierarchical CI")
    ax.legend(fontsize=8)
    save_png(fig, path)


def _plot_learning_curves(result: dict, curves: list[dict], path: str) -> None:
    regimes = sorted({c["n_labeled"] for c in curves})
    fig = new_figure(4.5 * len(regimes), 4)
    axes = np.atleast_1d(fig.subplots(1, len(regimes), squeeze=False)[0])
    arms = list(dict.fromkeys(result["arms"] + [c["arm"] for c in curves]))
    for ax, n_labeled in zip(axes, regimes):
        mine = [c for c in curves if c["n_labeled"] == n_labeled]
        for arm in dict.fromkeys(c["arm"] for c in mine):
            runs = [c for c in mine if c["arm"] == arm]
            for c in runs:
                ax.plot(np.arange(1, c["epochs"] + 1), c["ema_fg_dice"], color=arm_color(arms, arm), linewidth=0.8,
                        alpha=0.8)
            converged = sum(c["converged"] for c in runs)
            ax.plot([], [], color=arm_color(arms, arm), label=f"{arm} ({converged}/{len(runs)} converged)")
        ax.set_title(f"{n_labeled} labeled cases")
        ax.set_xlabel("epoch")
        ax.set_ylabel("EMA pseudo Dice")
        ax.legend(fontsize=7)
    fig.suptitle(f"EMA pseudo Dice, one line per run (seed); converged: changed and ranged < {CONVERGENCE_TOLERANCE} "
                 "over the last fifth")
    save_png(fig, path)


# ---------------------------------------------------------------- writing

def write_study_report(result: dict, output_folder: str, class_names: dict, curves: list[dict] | None = None,
                       missing: dict | None = None, wall_time: dict[str, list[float]] | None = None,
                       missing_over: dict | None = None) -> dict[str, str]:
    """Writes study.md/.csv/.json and the PNGs into output_folder; returns {'md'|'csv'|'json'|'dice_vs_labels'|
    'paired_differences'|'learning_curves'|'missing_modality'|'missing_heatmap': path} (learning_curves only when
    curves are given, the missing ones only when missing is).
    ``missing``: {condition: study_statistics result}, 'all modalities' first; ``missing_over``: study_statistics of
    missing_report.mean_over_conditions, the mean over the absent conditions (missing_report.py).
    ``wall_time``: seconds per run by kind of run (for example pretraining, segmentation), a section of study.md."""
    os.makedirs(output_folder, exist_ok=True)
    paths = {ext: os.path.join(output_folder, f"study.{ext}") for ext in ("md", "csv", "json")}
    write_text_atomically(_markdown(result, class_names, curves, missing, wall_time, missing_over), paths["md"])
    write_text_atomically(_csv(result, class_names), paths["csv"])
    write_text_atomically(_json(result, class_names, curves, missing, missing_over), paths["json"])
    paths["dice_vs_labels"] = os.path.join(output_folder, "dice_vs_labels.png")
    _plot_dice_vs_labels(result, paths["dice_vs_labels"])
    paths["paired_differences"] = os.path.join(output_folder, "paired_differences.png")
    plot_paired_differences(result["rows"], paths["paired_differences"], result["confidence_level"])
    if curves:
        paths["learning_curves"] = os.path.join(output_folder, "learning_curves.png")
        _plot_learning_curves(result, curves, paths["learning_curves"])
    if missing:
        paths.update(write_missing_figures(missing, class_names, output_folder))
    return paths

"""paired_differences.png of a study report, drawn from rows of study.csv's schema (so a committed report's CSV
redraws it): one panel per label regime; per arm, its class-mean paired difference to the baseline arm as a point
with its hierarchical CI as a horizontal bar, a line at 0, and the regime's A/A noise floor CI as a shaded band.

A row is a dict with at least the columns ``n_labeled``, ``class``, ``arm``, ``kind`` (baseline, aa, arm,
control), ``diff``, ``ci_low`` and ``ci_high``; values may be the CSV's strings (an empty cell is NaN) or numbers,
as in ``study_statistics``'s rows.
"""
from __future__ import annotations

import csv
import math

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import MEAN
from nnunet_cmcl.evaluation.figures import arm_color, new_figure, save_png
from nnunet_cmcl.evaluation.formatting import format_number

NEEDED_COLUMNS = ("n_labeled", "class", "arm", "kind", "diff", "ci_low", "ci_high")


def read_study_rows(csv_path: str) -> list[dict[str, str]]:
    """The rows of a study.csv written by write_study_report, as {column: text}."""
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as e:
        raise CMCLInputError(f"cannot read {csv_path} ({e.strerror}); give the study.csv of a study report") from None
    missing = [c for c in NEEDED_COLUMNS if c not in columns]
    if missing:
        raise CMCLInputError(f"{csv_path} lacks the column(s) {', '.join(missing)}: it is not a study.csv; give "
                             f"the study.csv of a study report")
    return rows


def _number(value) -> float:
    """A CSV cell or a row's value as float; empty cells and None are NaN."""
    return math.nan if value is None or value == "" else float(value)


def _regime_key(value) -> int | str:
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _regimes(rows: list[dict]) -> dict:
    """{n_labeled: {'baseline': arm, 'aa': row or None, 'arms': [rows of kind arm]}}, class "mean" only, in order
    of label count; every regime must have its baseline row."""
    mean_rows = [r for r in rows if r["class"] == MEAN]
    if not mean_rows:
        raise CMCLInputError(f"no rows of class {MEAN!r}: paired_differences.png draws the class-mean rows of a "
                             f"study.csv; give a study.csv written by write_study_report")
    regimes: dict = {}
    for r in mean_rows:
        regime = regimes.setdefault(_regime_key(r["n_labeled"]), {"baseline": None, "aa": None, "arms": []})
        if r["kind"] == "baseline":
            regime["baseline"] = r["arm"]
        elif r["kind"] == "aa":
            regime["aa"] = r
        elif r["kind"] == "arm":
            regime["arms"].append(r)
    for n_labeled, regime in regimes.items():
        if regime["baseline"] is None:
            raise CMCLInputError(f"n_labeled {n_labeled} has no baseline row (kind 'baseline', class {MEAN!r}); give "
                                 f"the whole study.csv as write_study_report wrote it")
    return dict(sorted(regimes.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def _panel(ax, n_labeled, regime: dict, arms: list[str]) -> None:
    arm_rows = regime["arms"]
    y = list(range(len(arm_rows)))[::-1]  # the first arm on top, as in the tables
    aa = regime["aa"]
    aa_low, aa_high = (_number(aa["ci_low"]), _number(aa["ci_high"])) if aa else (math.nan, math.nan)
    if not (math.isnan(aa_low) or math.isnan(aa_high)):
        ax.axvspan(aa_low, aa_high, color="0.85", zorder=0)
    else:  # one seed, or seeds on labeled subsets of their own (stats.py): no A/A row to read the noise from
        ax.text(0.02, 0.02, "no A/A noise floor\n(one seed, or a labeled subset per seed)", transform=ax.transAxes,
                fontsize=7, color="0.4")
    ax.axvline(0, color="black", linewidth=0.8, zorder=1)
    labels = []
    for row, position in zip(arm_rows, y):
        diff, low, high = (_number(row[k]) for k in ("diff", "ci_low", "ci_high"))
        color = arm_color(arms, row["arm"])
        if not (math.isnan(low) or math.isnan(high)):
            ax.hlines(position, low, high, color=color, linewidth=2.5, zorder=2)
        if not math.isnan(diff):
            ax.plot([diff], [position], "o", color=color, markersize=7, zorder=3)
        # the numbers beside the arm's name: text beside the bars would cross the band and the zero line
        labels.append(f"{row['arm']}\n{format_number(diff, '+.4f')} [{format_number(low, '+.4f')}, "
                      f"{format_number(high, '+.4f')}]")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, len(arm_rows) - 0.3)
    ax.set_title(f"{n_labeled} labeled cases", fontsize=10)
    ax.set_xlabel(f"class-mean Dice: arm - {regime['baseline']}", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def plot_paired_differences(rows: list[dict], path: str, confidence_level: float = 0.95) -> None:
    """Writes paired_differences.png of ``rows`` (study.csv's schema, see the module docstring) to ``path``."""
    if not rows:
        raise CMCLInputError("the study has no rows; give a study.csv (or result) with at least a baseline row")
    missing = [c for c in NEEDED_COLUMNS if c not in rows[0]]
    if missing:
        raise CMCLInputError(f"the rows lack the column(s) {', '.join(missing)}; give rows of study.csv's schema")
    regimes = _regimes(rows)
    arms = list(dict.fromkeys(r["arm"] for r in rows))  # study order: the colours of the report's other figures
    most_arms = max(len(g["arms"]) for g in regimes.values())
    fig = new_figure(4.2 * len(regimes), 1.6 + 0.6 * max(most_arms, 1))
    axes = fig.subplots(1, len(regimes), squeeze=False, sharex=True)[0]
    level = round(100 * confidence_level)
    for ax, (n_labeled, regime) in zip(axes, regimes.items()):
        _panel(ax, n_labeled, regime, arms)
    fig.suptitle(f"Paired difference to the baseline (mean over seeds) with its {level}% hierarchical CI (seeds, then "
                 f"cases)\ngrey band: the A/A noise floor, the baseline against itself with seeds rotated "
                 f"({level}% CI)", fontsize=9)
    save_png(fig, path)

"""The report of a comparison: markdown table, CSV, JSON and a PNG plot, written whole or not at all; and
``compare_and_report``, the one function that computes a comparison and writes it (for `compare`, `experiment`
and the demo)."""
from __future__ import annotations

import csv
import io
import json
import math
import os

from nnunet_cmcl.atomic import write_atomically, write_text_atomically
from nnunet_cmcl.evaluation.compare import MEAN, TIE, compare, default_output_folder, shared_folds
from nnunet_cmcl.evaluation.figures import new_figure
from nnunet_cmcl.evaluation.formatting import format_number, format_p, nan_to_none
from nnunet_cmcl.naming import dataset_name

COLUMNS = ("class", "baseline_dice", "candidate_dice", "diff", "ci_low", "ci_high", "p_wilcoxon",
           "wins", "ties", "losses", "n", "n_nan_dropped", "note")


def compare_and_report(dataset: str, configuration: str, plans: str, baseline: str, candidate: str,
                       folds: list | None = None, n_bootstrap: int = 10000, seed: int = 0,
                       validation: str = "validation", output: str | None = None) -> tuple[dict, dict[str, str]]:
    """Compares two trainers of ``dataset`` in nnUNet_results (on ``folds``, default: every fold both have) and
    writes the report (default folder: <results>/<dataset>/cmcl_comparisons/...). Returns (result, paths)."""
    from nnunetv2.paths import nnUNet_results

    results = os.path.join(nnUNet_results, dataset_name(dataset))
    if folds is None:
        folds = shared_folds(results, baseline, candidate, plans, configuration)
    result = compare(results, baseline, candidate, plans, configuration, folds, n_bootstrap, seed, validation)
    if output is None:
        output = default_output_folder(results, baseline, candidate, plans, configuration)
        if validation != "validation":
            output += f"__{validation}"
    return result, write_report(result, output)


def _class_label(result: dict, key: str) -> str:
    """'1 (structure_a)' with the name from dataset.json, the key alone when there is none."""
    name = result.get("class_names", {}).get(key)
    return f"{key} ({name})" if name and name != key else key


def format_table(result: dict) -> str:
    """The markdown table (one row per class, then "mean"), followed by the rows' notes if there are any."""
    head = "| class | baseline Dice | candidate Dice | diff | 95% CI | Wilcoxon p | W/T/L | n |"
    lines = [head, "|" + "---|" * 8]
    for r in result["rows"]:
        ci = f"[{format_number(r['ci_low'], '+.4f')}, {format_number(r['ci_high'], '+.4f')}]"
        lines.append(f"| {_class_label(result, r['class'])} | {format_number(r['baseline_dice'])} | "
                     f"{format_number(r['candidate_dice'])} | {format_number(r['diff'], '+.4f')} | {ci} | "
                     f"{format_p(r['p_wilcoxon'])} | "
                     f"{r['wins']}/{r['ties']}/{r['losses']} | {r['n']} |")
    notes = [f"- {r['class']}: {r['note']}" for r in result["rows"] if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def _markdown(result: dict) -> str:
    folds = ", ".join(str(f) for f in result["folds"])
    header = [f"# {result['candidate']} vs {result['baseline']}", "",
              f"- dataset: {result['dataset']}", f"- configuration: {result['configuration']}",
              f"- plans: {result['plans']}", f"- folds: {folds}", f"- baseline: {result['baseline']}",
              f"- candidate: {result['candidate']}", f"- cases: {result['n_cases']} (paired, pooled over folds)",
              f"- bootstrap: {result['n_bootstrap']} resamples, seed {result['seed']}", ""]
    definitions = ["", "Definitions:", ""] + [f"- {k}: {v}" for k, v in result["definitions"].items()]
    return "\n".join(header + [format_table(result)] + definitions) + "\n"


def _csv(result: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in result["rows"]:  # NaN as an empty cell, readable by any CSV reader
        writer.writerow(["" if isinstance(r[c], float) and math.isnan(r[c]) else r[c] for c in COLUMNS])
    return buf.getvalue()


def _plot(result: dict, path: str) -> None:
    """Left: per-case overall Dice, a line per case; right: per-class boxes of both trainers side by side."""
    fig = new_figure(12, 5)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    for p in result["cases"]:
        b, c = p["baseline"][MEAN], p["candidate"][MEAN]
        if math.isnan(b) or math.isnan(c):
            continue
        color = "tab:green" if c - b >= TIE else ("tab:red" if b - c >= TIE else "tab:gray")
        left.plot([0, 1], [b, c], "-o", color=color, alpha=0.6, markersize=3)
    left.set_xticks([0, 1], [result["baseline"], result["candidate"]], fontsize=8)
    left.set_xlim(-0.3, 1.3)
    left.set_ylabel("Dice (mean over classes, per case)")
    left.set_title("paired cases (green: candidate better)")
    _boxes(right, result)
    fig.suptitle(f"{result['dataset']} {result['configuration']}, folds "
                 f"{', '.join(str(f) for f in result['folds'])}, {result['n_cases']} cases")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _boxes(ax, result: dict) -> None:
    labels = result["classes"] + [MEAN]
    for side, offset, color in (("baseline", -0.2, "tab:blue"), ("candidate", 0.2, "tab:orange")):
        data, positions = [], []
        for i, k in enumerate(labels):
            # the cases the table uses: NaN for either trainer dropped pairwise
            values = [p[side][k] for p in result["cases"]
                      if not (math.isnan(p["baseline"][k]) or math.isnan(p["candidate"][k]))]
            if values:
                data.append(values)
                positions.append(i + offset)
        if data:
            ax.boxplot(data, positions=positions, widths=0.35, patch_artist=True,
                       boxprops={"facecolor": color, "alpha": 0.5}, medianprops={"color": "black"})
        ax.plot([], [], "s", color=color, alpha=0.5, label=result[side])
    ax.set_xticks(range(len(labels)), [_class_label(result, k) for k in labels], fontsize=8)
    ax.set_xlim(-0.7, len(labels) - 0.3)
    ax.set_xlabel("class")
    ax.set_ylabel("Dice per case")
    ax.set_title("per class (cases usable for both trainers)")
    ax.legend(fontsize=8)


def write_report(result: dict, output_folder: str) -> dict[str, str]:
    """Writes comparison.md, .csv, .json and .png into output_folder; returns {'md'|'csv'|'json'|'png': path}."""
    os.makedirs(output_folder, exist_ok=True)
    paths = {ext: os.path.join(output_folder, f"comparison.{ext}") for ext in ("md", "csv", "json", "png")}
    write_text_atomically(_markdown(result), paths["md"])
    write_text_atomically(_csv(result), paths["csv"])
    write_text_atomically(json.dumps(nan_to_none(result), indent=2, allow_nan=False) + "\n", paths["json"])
    write_atomically(paths["png"], lambda tmp: _plot(result, tmp))
    return paths

"""Numbers, p-values and durations as the reports and the console print them, and NaN as strict JSON's null."""
from __future__ import annotations

import math


def format_number(value: float | None, spec: str = ".4f") -> str:
    """``value`` in ``spec`` (e.g. '+.4f'); 'n/a' for None and NaN."""
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def format_p(p: float) -> str:
    """A p-value with 4 decimals, '<0.0001' below that, 'n/a' for NaN."""
    return "n/a" if math.isnan(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def nan_to_none(obj):
    """``obj`` (nested dicts, lists, tuples) with every float NaN replaced by None; tuples become lists."""
    # strict JSON has no NaN; null keeps the reports' JSON readable by every JSON parser
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``2 h 05 min``."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# ---------------------------------------------------------------- table cells of the study reports

DASH = "—"


def is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def dice_cell(row: dict) -> str:
    """'0.8123 [0.7901, 0.8302]': a row's Dice and its CI (stats.study_statistics' rows)."""
    if is_nan(row["dice"]):
        return DASH
    return f"{format_number(row['dice'])} [{format_number(row['dice_ci_low'])}, {format_number(row['dice_ci_high'])}]"


def diff_cell(row: dict) -> str:
    """'+0.0123 [-0.0040, +0.0310]': a row's paired difference and its hierarchical CI."""
    if is_nan(row["diff"]):
        return DASH
    low, high = format_number(row['ci_low'], '+.4f'), format_number(row['ci_high'], '+.4f')
    return f"{format_number(row['diff'], '+.4f')} [{low}, {high}]"


def regime_cell(row: dict) -> str:
    """'2 labeled (seeds 0, 1)': a paired row's regime and the seeds it covers (a partial report pairs a regime
    over the seeds whose every arm there has finished, so the regimes of one report may cover other seeds)."""
    seeds = row.get("seeds") or []
    if not seeds:
        return f"{row['n_labeled']} labeled"
    return f"{row['n_labeled']} labeled (seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)})"


def where_cell(row: dict, class_names: dict) -> str:
    """'2 labeled (seeds 0, 1), edema: +0.0123 [+0.0040, +0.0310]': a paired row's regime with its seeds, class
    and difference."""
    return f"{regime_cell(row)}, {class_names.get(row['class'], row['class'])}: {diff_cell(row)}"


def wtl_cell(row: dict) -> str:
    """'5/1/2': wins, ties, losses."""
    return DASH if is_nan(row["wins"]) else f"{row['wins']}/{row['ties']}/{row['losses']}"

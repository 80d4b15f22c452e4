"""Paired comparison of two nnU-Net trainers on the same folds, from nnU-Net's own validation summary.json files.

Cases are paired by (fold, case identifier) and pooled over the requested folds. Per class, and for "mean":

- a class's Dice is nnU-Net's per-case Dice; nnU-Net writes NaN (JSON ``NaN``) when reference and prediction are
  both empty. Such cases are dropped pairwise for that class (if either trainer has NaN) and counted in
  ``n_nan_dropped``, so a class's baseline and candidate means are over the same cases;
- "mean" is, per case and per trainer, the mean of that case's class Dice values ignoring its NaN classes. A
  trainer that predicts a class absent from the reference gets Dice 0 there instead of NaN, so false positives
  on empty classes count against it. A case whose classes are all NaN for either trainer is dropped;
- diff is candidate - baseline; the 95% CI is a percentile bootstrap of the mean paired difference over cases;
  the p-value is scipy's two-sided Wilcoxon signed-rank test; differences with |diff| < 1e-8 are ties (and are
  set to 0 for the test, whose default zero handling then drops them).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from numbers import Integral

import numpy as np
from nnunetv2.utilities.file_path_utilities import convert_identifier_to_trainer_plans_config
from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
from scipy.stats import wilcoxon

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import trainer_folder

TIE = 1e-8
MEAN = "mean"
KNOWN_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png", ".bmp", ".npz", ".npy")


# ---------------------------------------------------------------- loading

def default_output_folder(results_dataset_folder: str, baseline: str, candidate: str, plans: str,
                          configuration: str) -> str:
    """<results_dataset_folder>/cmcl_comparisons/<candidate>_vs_<baseline>__<plans>__<configuration>."""
    return os.path.join(results_dataset_folder, "cmcl_comparisons",
                        f"{candidate}_vs_{baseline}__{plans}__{configuration}")


def normalize_fold(fold) -> int | str:
    """0, '0' -> 0; 'all' -> 'all' (nnU-Net's fold names)."""
    if isinstance(fold, str) and fold.strip().isdigit():
        return int(fold)
    if isinstance(fold, Integral) and not isinstance(fold, bool) and fold >= 0:
        return int(fold)
    if fold == "all":
        return fold
    raise CMCLInputError(f"fold {fold!r} is not a fold name of nnU-Net; give non-negative integers or 'all'")


def _available_trainers(results_dataset_folder: str, plans: str, configuration: str) -> list[str]:
    found = [convert_identifier_to_trainer_plans_config(d) for d in os.listdir(results_dataset_folder)]
    return sorted(f[0] for f in found if f[1:] == [plans, configuration])


def shared_folds(results_dataset_folder: str, baseline: str, candidate: str, plans: str,
                 configuration: str) -> list[str]:
    """The folds both trainers have a folder for, numeric ones first in numeric order."""
    def fold_names(trainer: str) -> set[str]:
        folder = trainer_folder(results_dataset_folder, trainer, plans, configuration)
        return {f[5:] for f in os.listdir(folder) if f.startswith("fold_")} if os.path.isdir(folder) else set()

    folds = sorted(fold_names(baseline) & fold_names(candidate), key=lambda f: (not f.isdigit(), f.zfill(4)))
    if not folds:
        raise CMCLInputError(f"{baseline} and {candidate} share no trained fold of {plans} {configuration} in "
                             f"{results_dataset_folder}; train both on the same folds first")
    return folds


def load_fold_summary(results_dataset_folder: str, trainer: str, plans: str, configuration: str, fold,
                      validation: str = "validation") -> dict:
    """nnU-Net's fold_<fold>/<validation>/summary.json of a trainer, as written (class keys are strings).

    ``validation`` is nnU-Net's 'validation' or an evaluation of ours such as 'validation_missing_T2'.
    """
    if not os.path.isdir(results_dataset_folder):
        raise CMCLInputError(f"results folder {results_dataset_folder} does not exist; give "
                             f"<nnUNet_results>/<DatasetXXX_Name> of a trained dataset")
    folder = trainer_folder(results_dataset_folder, trainer, plans, configuration)
    if not os.path.isdir(folder):
        found = _available_trainers(results_dataset_folder, plans, configuration)
        raise CMCLInputError(f"{folder} does not exist: there are no results of {trainer} with plans {plans} and "
                             f"configuration {configuration}; check the names (trainers found with these plans "
                             f"and configuration: {', '.join(found) or 'none'}) or train it first")
    fold = normalize_fold(fold)
    fold_folder = os.path.join(folder, f"fold_{fold}")
    if not os.path.isdir(fold_folder):
        raise CMCLInputError(f"fold {fold} of {trainer} does not exist ({fold_folder}); train it "
                             f"(nnUNetv2_train ... {fold} -tr {trainer}) or leave the fold out with --folds")
    summary_file = os.path.join(fold_folder, validation, "summary.json")
    if not os.path.isfile(summary_file):
        raise CMCLInputError(f"fold {fold} of {trainer} has no validation/summary.json: the run is unfinished; "
                             f"finish it (nnUNetv2_train ... {fold} -tr {trainer} --c, or --val if training "
                             f"ended) or leave the fold out with --folds")
    try:
        with open(summary_file) as fh:
            summary = json.load(fh)  # json reads nnU-Net's NaN
    except json.JSONDecodeError as e:
        raise CMCLInputError(f"{summary_file} is not valid JSON ({e}); rerun the validation "
                             f"(nnUNetv2_train ... {fold} -tr {trainer} --val)") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("metric_per_case"), list):
        raise CMCLInputError(f"{summary_file} has no 'metric_per_case' list: it is not nnU-Net's summary.json; "
                             f"rerun the validation (nnUNetv2_train ... {fold} -tr {trainer} --val)")
    return summary


def dataset_json_of(results_dataset_folder: str, trainer: str, plans: str, configuration: str) -> dict:
    """The dataset.json nnU-Net copies into the trainer folder ({} if absent or unreadable)."""
    path = os.path.join(trainer_folder(results_dataset_folder, trainer, plans, configuration), "dataset.json")
    try:
        with open(path) as fh:
            content = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def file_ending_of(results_dataset_folder: str, trainer: str, plans: str, configuration: str) -> str | None:
    """The file ending from the dataset.json nnU-Net copies into the trainer folder (None if absent)."""
    return dataset_json_of(results_dataset_folder, trainer, plans, configuration).get("file_ending")


def _is_background(value) -> bool:
    return (value == 0) if not isinstance(value, (list, tuple)) else all(int(v) == 0 for v in value)


def class_names(dataset_json: dict) -> dict[str, str]:
    """{class key as summary.json writes it: name}, background and the ignore label left out, "mean" -> "mean".

    Like nnU-Net's LabelManager: regions are used when a label is a list of more than one label; then a list
    becomes the key "(1, 2)" (str of a tuple, as evaluate_predictions writes it) and an int stays "1".
    """
    labels = dataset_json.get("labels") if isinstance(dataset_json, dict) else None
    if not isinstance(labels, dict):
        raise CMCLInputError("dataset.json has no 'labels' dict; give the dataset.json of the trained dataset")
    regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    names: dict[str, str] = {}
    for name, value in labels.items():
        if name == "ignore" or _is_background(value):
            continue
        if regions:
            keys = [label_or_region_to_key(tuple(int(v) for v in value) if isinstance(value, (list, tuple))
                                           else int(value))]
        else:
            keys = [label_or_region_to_key(int(v)) for v in (value if isinstance(value, (list, tuple)) else [value])]
        for key in keys:
            names[key] = f"{names[key]}/{name}" if key in names else str(name)
    return {**names, MEAN: MEAN}


# ---------------------------------------------------------------- pairing

def case_id(path: str, file_ending: str | None = None) -> str:
    """Basename of a prediction/reference file without its file ending."""
    name = os.path.basename(path)
    for ending in ((file_ending,) if file_ending else ()) + KNOWN_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return os.path.splitext(name)[0]


def _class_sort_key(key: str):
    # nnU-Net's json has string keys sorted as text ("1", "10", "2"); order labels numerically, regions after them
    digits = [int(p) for p in key.strip("()").replace(" ", "").split(",") if p.lstrip("-").isdigit()]
    return (0 if key.lstrip("-").isdigit() else 1, digits, key)


def _dice(value) -> float:
    return float("nan") if value is None else float(value)


def cases_of(summary: dict, file_ending: str | None) -> dict[str, dict[str, float]]:
    """{case id: {class key: Dice}} of one summary."""
    out = {}
    for entry in summary["metric_per_case"]:
        cid = case_id(entry.get("prediction_file") or entry["reference_file"], file_ending)
        out[cid] = {str(k): _dice(m.get("Dice")) for k, m in entry["metrics"].items()}
    return out


def _few(ids) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "") if ids else "none"


def _check_same(fold, base: dict, cand: dict) -> None:
    if base.keys() != cand.keys():
        raise CMCLInputError(f"fold {fold}: baseline and candidate were validated on different cases (only in "
                             f"baseline: {_few(base.keys() - cand.keys())}; only in candidate: "
                             f"{_few(cand.keys() - base.keys())}); compare runs trained with the same "
                             f"splits_final.json")
    for cid in base:
        if base[cid].keys() != cand[cid].keys():
            raise CMCLInputError(f"fold {fold}, case {cid}: baseline has classes {sorted(base[cid])} but candidate "
                                 f"{sorted(cand[cid])}; compare runs of the same dataset with the same labels")


def paired_cases(baseline_summaries: dict, candidate_summaries: dict,
                 file_ending: str | None = None) -> list[dict]:
    """[{fold, case, baseline: {class: Dice}, candidate: {class: Dice}}] paired by (fold, case id), in fold order."""
    if list(baseline_summaries) != list(candidate_summaries):
        raise CMCLInputError(f"baseline has folds {list(baseline_summaries)} but candidate "
                             f"{list(candidate_summaries)}; give the same folds for both")
    pairs = []
    for fold in baseline_summaries:
        base = cases_of(baseline_summaries[fold], file_ending)
        cand = cases_of(candidate_summaries[fold], file_ending)
        _check_same(fold, base, cand)
        pairs += [{"fold": fold, "case": cid, "baseline": base[cid], "candidate": cand[cid]} for cid in sorted(base)]
    return pairs


def classes_of(pairs: list[dict]) -> list[str]:
    """The class keys present in the pairs, labels numerically ordered."""
    keys = {k for p in pairs for k in p["baseline"]}
    return sorted(keys, key=_class_sort_key)


def overall_dice(per_class: dict[str, float]) -> float:
    """Mean of a case's class Dice values ignoring NaN classes (NaN when all are NaN)."""
    values = [v for v in per_class.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------- statistics

def bootstrap_ci(diffs: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95,
                 chunk: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diffs`` (resampling cases with replacement)."""
    if diffs.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):  # chunks bound memory to chunk x n cases
        size = min(chunk, n_bootstrap - start)
        means[start:start + size] = diffs[rng.integers(0, diffs.size, size=(size, diffs.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def wilcoxon_p(diffs: np.ndarray) -> tuple[float, str]:
    """(two-sided Wilcoxon signed-rank p, note): 1.0 if all differences are ties, NaN below 2 pairs."""
    if diffs.size < 2:
        return float("nan"), f"Wilcoxon p not computed: {diffs.size} usable pair(s), needs at least 2"
    d = np.where(np.abs(diffs) < TIE, 0.0, diffs)
    if not np.any(d):
        return 1.0, "all paired differences are ties: Wilcoxon p set to 1.0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties/zeros switching to the normal approximation
        p = float(wilcoxon(d, alternative="two-sided").pvalue)
    n = int(np.count_nonzero(d))
    if n <= 5:  # the exact two-sided p when all n differences share a sign is 2 / 2^n: 0.0625 for n = 5
        return p, (f"{n} non-tied pairs: the smallest possible Wilcoxon p is {2.0 ** (1 - n):.4g}, so no difference "
                   f"can reach p < 0.05; use more cases or folds")
    return p, ""


def _nan_note(n_dropped: int) -> str:
    return (f"{n_dropped} case(s) dropped: NaN Dice (reference and prediction both empty) for at least one "
            f"trainer" if n_dropped else "")


def paired_stats(baseline: list[float], candidate: list[float], n_bootstrap: int, seed: int) -> dict:
    """Means, mean difference with bootstrap CI, Wilcoxon p and W/T/L of paired values, NaN pairs dropped."""
    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    usable = ~(np.isnan(b) | np.isnan(c))
    b, c = b[usable], c[usable]
    diffs = c - b
    p, p_note = wilcoxon_p(diffs)
    low, high = bootstrap_ci(diffs, n_bootstrap, seed)
    n_dropped = int((~usable).sum())
    nan = float("nan")
    return {"baseline_dice": float(b.mean()) if b.size else nan, "candidate_dice": float(c.mean()) if c.size else nan,
            "diff": float(diffs.mean()) if diffs.size else nan, "ci_low": low, "ci_high": high, "p_wilcoxon": p,
            "wins": int((diffs >= TIE).sum()), "ties": int((np.abs(diffs) < TIE).sum()),
            "losses": int((diffs <= -TIE).sum()), "n": int(diffs.size), "n_nan_dropped": n_dropped,
            "note": "; ".join(n for n in (p_note, _nan_note(n_dropped)) if n)}


# ---------------------------------------------------------------- comparison

def _check_settings(folds, n_bootstrap, seed) -> tuple[list, int, int]:
    folds = list(dict.fromkeys(normalize_fold(f) for f in (folds if isinstance(folds, (list, tuple)) else [folds])))
    if not folds:
        raise CMCLInputError("no folds were given; give at least one fold, e.g. --folds 0 1 2 3 4")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, Integral) or n_bootstrap < 1:
        raise CMCLInputError(f"n_bootstrap {n_bootstrap!r} is not a positive integer; give e.g. 10000")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise CMCLInputError(f"seed {seed!r} is not a non-negative integer; give e.g. 0")
    return folds, int(n_bootstrap), int(seed)


def compare(results_dataset_folder: str, baseline: str, candidate: str, plans: str, configuration: str,
            folds, n_bootstrap: int = 10000, seed: int = 0, validation: str = "validation") -> dict:
    """Loads both trainers' fold summaries, pairs cases and computes per-class and overall paired statistics."""
    folds, n_bootstrap, seed = _check_settings(folds, n_bootstrap, seed)
    args = (plans, configuration)
    base = {f: load_fold_summary(results_dataset_folder, baseline, *args, f, validation) for f in folds}
    cand = {f: load_fold_summary(results_dataset_folder, candidate, *args, f, validation) for f in folds}
    dataset_json = (dataset_json_of(results_dataset_folder, baseline, *args)
                    or dataset_json_of(results_dataset_folder, candidate, *args))
    ending = dataset_json.get("file_ending")
    names = class_names(dataset_json) if isinstance(dataset_json.get("labels"), dict) else {}
    pairs = paired_cases(base, cand, ending)
    classes = classes_of(pairs)
    for p in pairs:
        for side in ("baseline", "candidate"):
            p[side][MEAN] = overall_dice({k: p[side][k] for k in classes})
    rows = [{"class": k, **paired_stats([p["baseline"][k] for p in pairs], [p["candidate"][k] for p in pairs],
                                        n_bootstrap, seed)} for k in classes + [MEAN]]
    return {"dataset": os.path.basename(os.path.normpath(results_dataset_folder)),
            "results_dataset_folder": os.path.abspath(results_dataset_folder), "baseline": baseline,
            "candidate": candidate, "plans": plans, "configuration": configuration, "folds": folds,
            "validation": validation,
            "n_cases": len(pairs), "n_bootstrap": n_bootstrap, "seed": seed, "confidence_level": 0.95,
            "file_ending": ending, "classes": classes, "class_names": names, "rows": rows, "cases": pairs,
            "definitions": _definitions()}


def _definitions() -> dict[str, str]:
    return {"diff": "candidate - baseline, mean over paired cases",
            "ci": "95% percentile bootstrap CI of the mean paired difference, resampling cases",
            "p_wilcoxon": "two-sided Wilcoxon signed-rank test (scipy), ties (|diff| < 1e-8) dropped",
            "wins/ties/losses": "cases where candidate is better / within 1e-8 / worse",
            "mean": "per case and trainer, mean of the class Dice values ignoring NaN classes",
            "nan": "NaN Dice (empty reference and prediction) is dropped pairwise per class; counted in "
                   "n_nan_dropped"}

"""The numbers of a multi-arm, multi-seed study, from nnU-Net's own validation summary.json files (the learning
curves, from its checkpoints, are in curves.py).

A run is one nnU-Net fold folder of one arm (a trainer), label regime (``n_labeled`` labeled training cases) and
training seed. A unit is (source fold, seed, case id): the same validation case of the same original fold,
predicted by runs of the same seed. Per label regime, class key and "mean":

- an arm's mean Dice is the mean over seeds of its mean over cases; the arm's own NaN Dice values (reference and
  prediction both empty) are left out of it and counted;
- diff is arm - baseline over the units both have, NaN pairs dropped per class as in compare.py and counted;
  diff is the mean over seeds of the per-seed mean differences (the per-seed differences are reported too);
- the CIs are hierarchical percentile bootstraps: resample seeds with replacement, then each drawn seed's cases
  with replacement, and take the mean over all drawn values. Seed-to-seed variation widens them, which a plain
  case bootstrap hides. With one seed this is compare.bootstrap_ci;
- W/T/L counts the paired units where the arm is better / within compare.TIE / worse; the two-sided Wilcoxon
  signed-rank p is over all paired units (it treats the seeds' units as independent, so it is optimistic when
  seeds are few: read the hierarchical CI first);
- the A/A row pairs the baseline arm with itself, seed s against the next seed in sorted order (cyclically) on
  the same cases: the difference that training noise alone makes, the noise floor of every other row. Its mean
  diff is 0 by construction when every seed has every case (the rotation is a cycle); its CI and per-seed
  differences are what to read. Records may name their labeled cases (``labeled``): where the seeds' differ, seed
  against seed would measure the subsets, so the A/A row is left out; an arm paired with the baseline on other
  labeled cases is refused.
"""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import (MEAN, TIE, bootstrap_ci, cases_of, classes_of, file_ending_of,
                                            load_fold_summary, overall_dice, wilcoxon_p)

RUN_KEYS = ("arm", "trainer", "fold", "source_fold", "n_labeled")
NAN = float("nan")


# ---------------------------------------------------------------- loading

def check_run(run) -> None:
    if not isinstance(run, dict) or any(k not in run for k in RUN_KEYS):
        raise CMCLInputError(f"run {run!r} lacks one of the keys {', '.join(RUN_KEYS)} (and 'seed', 'fraction'); "
                             f"give each run as such a dict")


def load_records(results_dataset_folder: str, plans: str, configuration: str, runs: list[dict],
                 validation: str = "validation") -> list[dict]:
    """One record per (run, validation case): the run's keys plus ``case`` and ``dice`` ({class key: Dice, "mean"})."""
    if not runs:
        raise CMCLInputError("no runs were given; give at least the baseline arm's runs")
    records = []
    for run in runs:
        check_run(run)
        summary = load_fold_summary(results_dataset_folder, run["trainer"], plans, configuration, run["fold"],
                                    validation)
        ending = file_ending_of(results_dataset_folder, run["trainer"], plans, configuration)
        for cid, dice in sorted(cases_of(summary, ending).items()):
            records.append({**run, "case": cid, "dice": {**dice, MEAN: overall_dice(dice)}})
    return records


# ---------------------------------------------------------------- bootstrap

def hierarchical_bootstrap_ci(diffs_by_seed: dict, n_bootstrap: int, rng_seed: int, level: float = 0.95,
                              chunk: int = 1000) -> tuple[float, float]:
    """Percentile CI of the mean, resampling seeds and then each drawn seed's values, with replacement.

    Seeds without values are left out. Per chunk of resamples the draws are ``rng.integers(0, S, (size, S))``
    (the seeds) then ``rng.integers(0, n_of_drawn_seed, (size, S, max n))`` (the cases; positions beyond a
    seed's own count are drawn but not used), so a reference loop can replay them.
    """
    arrays = [np.asarray(v, dtype=float).ravel() for v in diffs_by_seed.values()]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return NAN, NAN
    if len(arrays) == 1:
        return bootstrap_ci(arrays[0], n_bootstrap, rng_seed, level, chunk)
    sizes = np.array([a.size for a in arrays])
    n_seeds, width = len(arrays), int(sizes.max())
    padded = np.zeros((n_seeds, width))
    for i, a in enumerate(arrays):
        padded[i, :a.size] = a
    rng = np.random.default_rng(rng_seed)
    means = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):  # chunks bound memory to chunk x seeds x cases
        size = min(chunk, n_bootstrap - start)
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds))
        drawn_sizes = sizes[seeds]
        cases = rng.integers(0, drawn_sizes[..., None], size=(size, n_seeds, width))
        used = np.arange(width) < drawn_sizes[..., None]  # a seed with fewer cases contributes only its own count
        totals = (padded[seeds[..., None], cases] * used).sum(axis=(1, 2))
        means[start:start + size] = totals / drawn_sizes.sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


# ---------------------------------------------------------------- grouping and checks

def _seed_key(seed):
    return (seed is None, 0 if seed is None else seed)


def _unit_key(unit: tuple):
    source_fold, seed, case = unit
    return (str(source_fold).zfill(4), _seed_key(seed), case)


def _index(records: list[dict]) -> dict:
    """{n_labeled: {arm: {(source_fold, seed, case): record}}}; two records of one unit are refused."""
    index: dict = {}
    for r in records:
        unit = (r["source_fold"], r.get("seed"), r["case"])
        units = index.setdefault(r["n_labeled"], {}).setdefault(r["arm"], {})
        if unit in units:
            raise CMCLInputError(f"arm {r['arm']}, n_labeled {r['n_labeled']}: two runs (folds {units[unit]['fold']} "
                                 f"and {r['fold']}) validate case {r['case']} of source fold {r['source_fold']} with "
                                 f"seed {r.get('seed')}; give each arm one run per source fold and seed")
        units[unit] = r
    return index


def _few(units) -> str:
    units = sorted(units, key=_unit_key)
    first = ", ".join(f"case {c} of source fold {f} (seed {s})" for f, s, c in units[:3])
    return first + (f" and {len(units) - 3} more" if len(units) > 3 else "")


def _check_regime(n_labeled, arms: dict, baseline: str) -> None:
    """Every arm of the regime has the baseline's seeds, cases and classes."""
    base = arms[baseline]
    seeds = sorted({u[1] for u in base}, key=_seed_key)
    for arm, units in arms.items():
        arm_seeds = {u[1] for u in units}
        for seed in seeds:
            if seed not in arm_seeds:
                raise CMCLInputError(f"n_labeled {n_labeled}: arm {arm} has no run with seed {seed}, which baseline "
                                     f"{baseline} has; train it or leave seed {seed} out of every arm")
        extra = sorted(arm_seeds - set(seeds), key=_seed_key)
        if extra:
            raise CMCLInputError(f"n_labeled {n_labeled}: arm {arm} has seed {extra[0]}, which baseline {baseline} "
                                 f"lacks; train the baseline with it or leave it out of every arm")
        for missing, side in ((base.keys() - units.keys(), "lacks"), (units.keys() - base.keys(), "has extra")):
            if missing:
                raise CMCLInputError(f"n_labeled {n_labeled}: arm {arm} {side} {_few(missing)} compared with "
                                     f"baseline {baseline}; compare runs validated on the same splits")
        for unit, record in units.items():
            if None not in (record.get("labeled"), base[unit].get("labeled")) and \
                    record["labeled"] != base[unit]["labeled"]:
                raise CMCLInputError(f"n_labeled {n_labeled}: arm {arm} trained on other labeled cases than "
                                     f"baseline {baseline} for {_few([unit])} (folds {record['fold']} and "
                                     f"{base[unit]['fold']}); pair runs of the same labeled subset")
            if record["dice"].keys() != base[unit]["dice"].keys():
                raise CMCLInputError(f"n_labeled {n_labeled}: arm {arm} has classes {sorted(record['dice'])} for "
                                     f"{_few([unit])} but {baseline} {sorted(base[unit]['dice'])}; compare runs "
                                     f"of the same dataset with the same labels")


def _by_seed(units: dict, key: str) -> dict:
    """{seed: {(source_fold, case): Dice of class ``key``}}, seeds in sorted order."""
    out: dict = {}
    for (source_fold, seed, case), record in sorted(units.items(), key=lambda kv: _unit_key(kv[0])):
        out.setdefault(seed, {})[(source_fold, case)] = record["dice"][key]
    return dict(sorted(out.items(), key=lambda kv: _seed_key(kv[0])))


# ---------------------------------------------------------------- rows

def _mean_of_seed_means(values_by_seed: dict) -> float:
    means = [float(np.mean(v)) for v in values_by_seed.values() if len(v)]
    return float(np.mean(means)) if means else NAN


def _arm_dice(values: dict, n_bootstrap: int, rng_seed: int) -> dict:
    """The arm's mean Dice over seeds and cases, its own NaN values left out."""
    kept = {s: np.array([x for x in v.values() if not math.isnan(x)]) for s, v in values.items()}
    low, high = hierarchical_bootstrap_ci(kept, n_bootstrap, rng_seed)
    n = sum(a.size for a in kept.values())
    return {"dice": _mean_of_seed_means(kept), "dice_ci_low": low, "dice_ci_high": high, "n_dice": n,
            "n_dice_nan": sum(len(v) for v in values.values()) - n}


def _no_diff(note: str = "") -> dict:
    return {"diff": NAN, "ci_low": NAN, "ci_high": NAN, "seed_diffs": [], "wins": NAN, "ties": NAN, "losses": NAN,
            "n": NAN, "n_nan_dropped": NAN, "p_wilcoxon": NAN, "note": note}


def _paired(pairs_by_seed: dict, n_bootstrap: int, rng_seed: int) -> dict:
    """Paired statistics of {seed: (baseline values, arm values, seed paired against)}, NaN pairs dropped."""
    diffs_by_seed, seed_diffs, dropped = {}, [], 0
    for seed, (b, c, against) in pairs_by_seed.items():
        b, c = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
        usable = ~(np.isnan(b) | np.isnan(c))
        dropped += int((~usable).sum())
        diffs_by_seed[seed] = d = c[usable] - b[usable]
        seed_diffs.append({"seed": seed, "vs_seed": against, "diff": float(d.mean()) if d.size else NAN,
                           "n": int(d.size)})
    pooled = np.concatenate(list(diffs_by_seed.values()))
    low, high = hierarchical_bootstrap_ci(diffs_by_seed, n_bootstrap, rng_seed)
    p, p_note = wilcoxon_p(pooled)
    nan_note = f"{dropped} pair(s) dropped: NaN Dice (reference and prediction both empty)" if dropped else ""
    return {"diff": _mean_of_seed_means(diffs_by_seed), "ci_low": low, "ci_high": high, "seed_diffs": seed_diffs,
            "wins": int((pooled >= TIE).sum()), "ties": int((np.abs(pooled) < TIE).sum()),
            "losses": int((pooled <= -TIE).sum()), "n": int(pooled.size), "n_nan_dropped": dropped,
            "p_wilcoxon": p, "note": "; ".join(n for n in (p_note, nan_note) if n)}


def _arm_pairs(base: dict, arm: dict) -> dict:
    return {s: ([base[s][k] for k in base[s]], [arm[s][k] for k in base[s]], s) for s in base}


def _rotated_pairs(base: dict) -> tuple[dict, int]:
    """Seed s against the next seed (cyclically) on the cases both have; returns (pairs, units left unpaired)."""
    seeds = list(base)
    pairs, unpaired = {}, 0
    for i, seed in enumerate(seeds):
        other = seeds[(i + 1) % len(seeds)]
        shared = [k for k in base[seed] if k in base[other]]
        unpaired += len(base[seed]) - len(shared)
        pairs[seed] = ([base[seed][k] for k in shared], [base[other][k] for k in shared], other)
    return pairs, unpaired


def _labeled_subsets(units: dict) -> dict:
    """{(source_fold, seed): the labeled subset its run trained on}, for records that name it (``labeled``)."""
    return {(u[0], u[1]): r["labeled"] for u, r in units.items() if r.get("labeled") is not None}


def _other_subsets(subsets: dict, seeds: list) -> bool:
    """Whether a seed and the next one (the A/A's rotation) trained on other labeled subsets of a source fold."""
    rotated = dict(zip(seeds, seeds[1:] + seeds[:1]))
    return any(subsets.get((fold, rotated[seed]), labeled) != labeled for (fold, seed), labeled in subsets.items())


def _aa_row(base: dict, n_bootstrap: int, rng_seed: int, other_subsets: bool = False) -> dict:
    # other subsets: seed against seed would be subset against subset, far wider than training noise
    why_not = (f"A/A needs at least 2 seeds; this regime has {len(base)}" if len(base) < 2 else
               "no A/A: each seed trains on its own labeled subset here, so seed against seed measures the subsets, "
               "not the noise floor" if other_subsets else None)
    if why_not:
        return {**_arm_dice({}, n_bootstrap, rng_seed), **_no_diff(why_not)}
    pairs, unpaired = _rotated_pairs(base)
    row = {**_arm_dice({}, n_bootstrap, rng_seed), **_paired(pairs, n_bootstrap, rng_seed)}
    if unpaired:
        row["note"] = "; ".join(n for n in (row["note"], f"{unpaired} case(s) without the next seed's run") if n)
    return row


def _regime_head(n_labeled, arms: dict, baseline: str) -> dict:
    return {"n_labeled": n_labeled,
            "fractions": sorted({r.get("fraction") for units in arms.values() for r in units.values()} - {None}),
            "seeds": sorted({u[1] for u in arms[baseline]}, key=_seed_key)}


def _regime_rows(head: dict, arms: dict, baseline: str, controls: dict, classes: list[str], n_bootstrap: int,
                 rng_seed: int) -> list[dict]:
    rows = []
    other_subsets = _other_subsets(_labeled_subsets(arms[baseline]), head["seeds"])
    for key in classes:
        base = _by_seed(arms[baseline], key)
        rows.append({**head, "class": key, "arm": baseline, "kind": "baseline", "against": None,
                     **_arm_dice(base, n_bootstrap, rng_seed), **_no_diff()})
        rows.append({**head, "class": key, "arm": baseline, "kind": "aa", "against": baseline,
                     **_aa_row(base, n_bootstrap, rng_seed, other_subsets)})
        values = {arm: _by_seed(arms[arm], key) for arm in arms}
        dice = {arm: _arm_dice(values[arm], n_bootstrap, rng_seed) for arm in arms if arm != baseline}
        for arm in dice:
            rows.append({**head, "class": key, "arm": arm, "kind": "arm", "against": baseline, **dice[arm],
                         **_paired(_arm_pairs(base, values[arm]), n_bootstrap, rng_seed)})
        for arm, control in controls.items():  # the arm's own Dice again: a control row reads whole on its own
            if arm in dice and control in dice:
                rows.append({**head, "class": key, "arm": arm, "kind": "control", "against": control, **dice[arm],
                             **_paired(_arm_pairs(values[control], values[arm]), n_bootstrap, rng_seed)})
    return rows


# ---------------------------------------------------------------- study

def _check_settings(n_bootstrap, rng_seed) -> None:
    for name, value, low, example in (("n_bootstrap", n_bootstrap, 1, 10000), ("rng_seed", rng_seed, 0, 0)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise CMCLInputError(f"{name} {value!r} is not an integer >= {low}; give e.g. {example}")


def study_statistics(records: list[dict], baseline_arm: str, n_bootstrap: int = 10000, rng_seed: int = 0,
                     controls: dict[str, str] | None = None) -> dict:
    """Per label regime, class and arm: mean Dice with CI, and paired differences to the baseline arm (see the
    module docstring); an A/A row per regime and class gives the noise floor. ``controls`` maps an arm to the arm
    it is also paired with (its schedule-matched control, or the default it is an alternative to): a row of kind
    'control' pairs the two the same way."""
    _check_settings(n_bootstrap, rng_seed)
    controls = dict(controls or {})
    if not records:
        raise CMCLInputError("no records were given; load them with load_records first")
    arms = list(dict.fromkeys(r["arm"] for r in records))
    if baseline_arm not in arms:
        raise CMCLInputError(f"baseline arm {baseline_arm!r} is not among the arms {', '.join(map(str, arms))}; "
                             f"give one of them")
    arms = [baseline_arm] + [a for a in arms if a != baseline_arm]
    unknown = sorted({a for pair in controls.items() for a in pair} - set(arms))
    if unknown:
        raise CMCLInputError(f"controls name arm(s) {', '.join(unknown)}, which have no records; give arms among "
                             f"{', '.join(map(str, arms))}")
    index = _index(records)
    rows, regimes = [], []
    for n_labeled in sorted(index):
        present = index[n_labeled]
        if baseline_arm not in present:
            raise CMCLInputError(f"n_labeled {n_labeled}: baseline arm {baseline_arm} has no runs; train it there "
                                 f"or leave that regime's runs out")
        ordered = {a: present[a] for a in arms if a in present}
        _check_regime(n_labeled, ordered, baseline_arm)
        classes = [k for k in classes_of([{"baseline": r["dice"]} for r in present[baseline_arm].values()])
                   if k != MEAN]
        head = _regime_head(n_labeled, ordered, baseline_arm)
        rows += _regime_rows(head, ordered, baseline_arm, controls, [MEAN] + classes, n_bootstrap, rng_seed)
        units = present[baseline_arm]
        regimes.append({**head, "source_folds": sorted({u[0] for u in units}, key=lambda f: str(f).zfill(4)),
                        "n_units": len(units), "classes": classes, "arms": list(ordered),
                        "arms_absent": [a for a in arms if a not in present]})
    all_classes = classes_of([{"baseline": dict.fromkeys(g["classes"])} for g in regimes])
    return {"baseline_arm": baseline_arm, "arms": arms, "classes": all_classes + [MEAN], "regimes": regimes,
            "n_bootstrap": int(n_bootstrap), "rng_seed": int(rng_seed), "confidence_level": 0.95, "rows": rows,
            "definitions": definitions()}


def definitions() -> dict[str, str]:
    return {"unit": "(source fold, seed, validation case): what the arms are paired on",
            "mean Dice": "mean over seeds of the arm's mean over cases; the arm's NaN Dice values left out "
                         "(n_dice_nan)",
            "diff": "arm - baseline per unit (rows 'vs control': arm - the arm it is paired with), mean over "
                    "seeds of the per-seed mean; NaN pairs dropped (n_nan_dropped)",
            "ci": "95% hierarchical percentile bootstrap: seeds resampled, then cases within each drawn seed",
            "per-seed diffs": "the mean difference of each training seed alone",
            "W/T/L": f"paired units where the arm is better / within {TIE:g} / worse",
            "p_wilcoxon": "two-sided Wilcoxon signed-rank test over all paired units (seeds' units taken as "
                          "independent: optimistic with few seeds)",
            "A/A": "the baseline arm against itself, seed s against the next seed (cyclically), same cases: the "
                   "difference training noise alone makes. Its mean diff is 0 by construction (the rotation is a "
                   "cycle); its CI and per-seed diffs are the noise floor. Left out where the seeds train on "
                   "their own labeled subsets (records naming other 'labeled' subsets): there seed against seed "
                   "measures the subsets",
            "mean": "per case, the mean of its class Dice values ignoring NaN classes"}

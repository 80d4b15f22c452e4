"""Label-fraction folds: smaller training sets with the same validation cases, appended to splits_final.json.

nnU-Net reads a fold as ``splits[fold]['train']`` and ``splits[fold]['val']`` (``nnUNetTrainer.do_split``; the
planner's ``_maybe_copy_splits_file`` reads the same two keys), so extra keys in a fold's dict are harmless. The
metadata of an added fold therefore lives in the fold itself, in ``cmcl_source_fold``, ``cmcl_fraction`` and
``cmcl_seed``: it travels with the file, cannot go out of sync with a sidecar, and marks derived folds so that
they are never used as a source again. Existing folds are never rewritten or reordered; new ones are appended.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from numbers import Integral, Real

import numpy as np

from nnunet_cmcl.atomic import write_json_atomically
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import dataset_name
from nnunet_cmcl.seeding import TRAIN_SEED_KEY

SPLITS_FILE = "splits_final.json"
SOURCE_KEY, FRACTION_KEY, SEED_KEY = "cmcl_source_fold", "cmcl_fraction", "cmcl_seed"
SEEDED_FROM_KEY = "cmcl_seeded_from"  # a training-seed repeat of that fold; its seed is seeding.TRAIN_SEED_KEY


def is_derived(split: dict) -> bool:
    """True for a fold that was added here (a label-fraction subset or a training-seed repeat of another fold)."""
    return SOURCE_KEY in split or SEEDED_FROM_KEY in split


def subset_size(fraction: float, n: int) -> int:
    """Training cases kept of ``n``: max(1, round(fraction * n)) with Python's round (half to even)."""
    return max(1, round(fraction * n))


def _check_splits(splits) -> None:
    ok = isinstance(splits, list) and all(
        isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list) for s in splits)
    if not ok:
        raise CMCLInputError("the splits are not in nnU-Net's format (a list of {'train': [...], 'val': [...]}); "
                             "give the splits_final.json that nnU-Net wrote or one in its format")


def _check_fractions(fractions) -> list[float]:
    """Valid fractions in (0, 1), deduplicated in the given order."""
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        fractions = [fractions]
    out: list[float] = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, Real) or not (0 < float(f) < 1):
            raise CMCLInputError(f"label fraction {f!r} is not a number strictly between 0 and 1; give fractions "
                                 f"such as 0.1 or 0.5")
        if float(f) not in out:
            out.append(float(f))
    if not out:
        raise CMCLInputError("no label fractions were given; give at least one fraction between 0 and 1")
    return out


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise CMCLInputError(f"seed {seed!r} is not a non-negative integer; give one such as 0")
    return int(seed)


def _source_folds(splits: list[dict], source_folds) -> list[int]:
    """The folds to derive from: every fold that is not itself derived, unless given."""
    if source_folds is None:
        return [i for i, s in enumerate(splits) if not is_derived(s)]
    out: list[int] = []
    for k in source_folds:
        if isinstance(k, bool) or not isinstance(k, Integral) or not 0 <= k < len(splits):
            raise CMCLInputError(f"source fold {k!r} is not in splits_final.json (it has folds 0 to "
                                 f"{len(splits) - 1}); choose one of those")
        if is_derived(splits[k]):
            origin = splits[k].get(SOURCE_KEY, splits[k].get(SEEDED_FROM_KEY))
            raise CMCLInputError(f"fold {k} is itself derived from fold {origin} (a label-fraction fold or a "
                                 f"training-seed repeat); derive from fold {origin} instead")
        if not splits[k]["train"]:
            raise CMCLInputError(f"fold {k} has no training cases to subsample; choose a fold with training cases")
        if int(k) not in out:
            out.append(int(k))
    return out


def _subset_seed(seed: int, source_fold: int, fraction: float, train_sorted: list[str]) -> int:
    # a hash of everything the subset depends on, so it is stable across processes, platforms and numpy versions
    payload = json.dumps([seed, source_fold, repr(fraction), train_sorted])
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "little")


def fraction_subset(train: list[str], fraction: float, seed: int, source_fold: int) -> list[str]:
    """Sorted reproducible random subset of ``train`` with subset_size(fraction, len(train)) cases."""
    pool = sorted(train)
    rng = np.random.default_rng(_subset_seed(seed, source_fold, fraction, pool))
    chosen = rng.choice(len(pool), size=subset_size(fraction, len(pool)), replace=False)
    return sorted(pool[i] for i in chosen)


def _fold_key(split: dict) -> tuple:
    return tuple(sorted(split["train"])), tuple(sorted(split["val"])), split.get(TRAIN_SEED_KEY)


def add_label_fraction_folds(splits: list[dict], fractions: list[float], seed: int = 0,
                             source_folds: list[int] | None = None) -> tuple[list[dict], list[dict]]:
    """Returns (new full splits list, descriptions of the added folds).

    One fold per (source fold, fraction): a subset of the source fold's 'train' and exactly its 'val'. A fold whose
    train and val already exist is not added again; its description gives the existing index with existed=True.
    The input list is not modified.
    """
    _check_splits(splits)
    fractions, seed = _check_fractions(fractions), _check_seed(seed)
    sources = _source_folds(splits, source_folds)
    out = copy.deepcopy(splits)
    index = {}
    for i, s in enumerate(out):
        index.setdefault(_fold_key(s), i)
    descriptions = []
    for k in sources:
        for f in fractions:
            new = {"train": fraction_subset(out[k]["train"], f, seed, k), "val": list(out[k]["val"]),
                   SOURCE_KEY: k, FRACTION_KEY: f, SEED_KEY: seed}
            key = _fold_key(new)
            existed = key in index
            if not existed:
                index[key] = len(out)
                out.append(new)
            descriptions.append({"fold": index[key], "source_fold": k, "fraction": f,
                                 "n_train": len(new["train"]), "seed": seed, "existed": existed})
    return out, descriptions


def add_train_seed_folds(splits: list[dict], folds: list[int], seeds: list[int]) -> tuple[list[dict], dict]:
    """Returns (new full splits list, {(fold, seed): fold index}): one repeat of each fold per training seed,
    with the fold's 'train', 'val' and label-fraction keys, plus the seed. Existing repeats are reused; the input
    list is not modified."""
    _check_splits(splits)
    seeds = [_check_seed(s) for s in dict.fromkeys(seeds)]
    out = copy.deepcopy(splits)
    index = {}
    for i, s in enumerate(out):
        index.setdefault(_fold_key(s), i)
    mapping = {}
    for fold in folds:
        if SEEDED_FROM_KEY in out[fold]:
            raise CMCLInputError(f"fold {fold} is already a training-seed repeat of fold {out[fold][SEEDED_FROM_KEY]}; "
                                 f"repeat fold {out[fold][SEEDED_FROM_KEY]} instead")
        for seed in seeds:
            new = {**copy.deepcopy(out[fold]), SEEDED_FROM_KEY: fold, TRAIN_SEED_KEY: seed}
            key = _fold_key(new)
            if key not in index:
                index[key] = len(out)
                out.append(new)
            mapping[(fold, seed)] = index[key]
    return out, mapping


def write_train_seed_folds(preprocessed_dataset_folder: str, folds: list[int], seeds: list[int]) -> dict:
    """add_train_seed_folds on the folder's splits_final.json, written back atomically if anything was added."""
    splits_file = os.path.join(preprocessed_dataset_folder, SPLITS_FILE)
    splits = _read_splits(splits_file)
    new, mapping = add_train_seed_folds(splits, folds, seeds)
    if len(new) > len(splits):
        write_json_atomically(new, splits_file)
    return mapping


def _read_splits(splits_file: str) -> list[dict]:
    if not os.path.isfile(splits_file):
        raise CMCLInputError(f"{splits_file} does not exist; nnU-Net writes it when training of a fold starts, so "
                             f"run nnUNetv2_plan_and_preprocess and then nnUNetv2_train on one fold (or place "
                             f"your own splits_final.json there) first")
    try:
        with open(splits_file) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise CMCLInputError(f"{splits_file} is not valid JSON ({e}); restore it or delete it and let "
                             f"nnUNetv2_train write it again") from None


def write_label_fraction_folds(preprocessed_dataset_folder: str, fractions, seed: int = 0,
                               source_folds: list[int] | None = None) -> list[dict]:
    """Reads splits_final.json in the folder, adds folds, writes it back atomically, returns descriptions."""
    splits_file = os.path.join(preprocessed_dataset_folder, SPLITS_FILE)
    splits = _read_splits(splits_file)
    new, descriptions = add_label_fraction_folds(splits, fractions, seed, source_folds)
    if len(new) > len(splits):  # nothing added: leave the file (and its mtime) alone
        write_json_atomically(new, splits_file)
    return descriptions


def write_dataset_label_fraction_folds(dataset: str, fractions, seed: int = 0, source_folds=None) -> list[dict]:
    """write_label_fraction_folds for a dataset (name or id) in nnUNet_preprocessed."""
    from nnunetv2.paths import nnUNet_preprocessed

    return write_label_fraction_folds(os.path.join(nnUNet_preprocessed, dataset_name(dataset)), fractions, seed,
                                      source_folds)


def describe_folds(descriptions: list[dict]) -> list[str]:
    """One line per fold, e.g. 'fold 5: 0.1 of fold 0 (1 training case, seed 0), added'."""
    lines = []
    for d in descriptions:
        cases = f"{d['n_train']} training case{'s' if d['n_train'] != 1 else ''}"
        state = "already present" if d["existed"] else "added"
        lines.append(f"fold {d['fold']}: {d['fraction']:.4g} of fold {d['source_fold']} ({cases}, seed {d['seed']}), "
                     f"{state}")
    return lines

"""The learning curves of a study's runs, from nnU-Net's own checkpoints: the logged per-epoch lists and whether the
EMA pseudo Dice converged (changed and ranged by less than CONVERGENCE_TOLERANCE over the last fifth)."""
from __future__ import annotations

import json
import os

import numpy as np

from nnunet_cmcl.checkpoints import load_checkpoint_safely
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import normalize_fold
from nnunet_cmcl.evaluation.stats import NAN, check_run
from nnunet_cmcl.naming import trainer_folder

CONVERGENCE_TOLERANCE = 0.01
# the per-epoch logging of a run's final checkpoint alone, where a study's ledger restored the run without weights
CURVES_FILE = "cmcl_curves.json"


def _checkpoint_of(results_dataset_folder: str, plans: str, configuration: str, run: dict) -> str:
    """The run's final (or latest) checkpoint, or the curves a study's ledger kept of it (study/ledger.py)."""
    folder = os.path.join(trainer_folder(results_dataset_folder, run["trainer"], plans, configuration),
                          f"fold_{normalize_fold(run['fold'])}")
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", CURVES_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise CMCLInputError(f"{folder} has no checkpoint_final.pth or checkpoint_latest.pth: arm {run['arm']} fold "
                         f"{run['fold']} was not trained; train it or leave the run out")


def _logging_of(path: str) -> dict:
    """nnU-Net's per-epoch logging of a checkpoint, or of the curves file that holds it alone."""
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    logging = load_checkpoint_safely(path).get("logging")
    if not isinstance(logging, dict):
        raise CMCLInputError(f"{path} has no 'logging' dict: it was not written by nnU-Net's trainer")
    return logging


def convergence(ema: list[float]) -> tuple[bool, float, float]:
    """(converged, |ema[-1] - ema[k]|, max - min of ema[k:]) with k the first epoch of the last fifth."""
    if len(ema) < 2:
        return False, NAN, NAN
    k = min(len(ema) * 4 // 5, len(ema) - 2)  # at least two epochs, so a change can show
    tail = np.asarray(ema[k:], dtype=float)
    change, spread = abs(float(tail[-1] - tail[0])), float(tail.max() - tail.min())
    # NaN compares False: a curve with NaN at its end is not called converged
    return bool(change < CONVERGENCE_TOLERANCE and spread < CONVERGENCE_TOLERANCE), change, spread


def learning_curves(results_dataset_folder: str, plans: str, configuration: str, runs: list[dict]) -> list[dict]:
    """Per run: its keys, the logged per-epoch lists and the convergence of the EMA pseudo Dice."""
    curves = []
    for run in runs:
        check_run(run)
        path = _checkpoint_of(results_dataset_folder, plans, configuration, run)
        logging = _logging_of(path)
        lists = {k: [float(x) for x in logging.get(k, [])]
                 for k in ("ema_fg_dice", "mean_fg_dice", "train_losses", "val_losses")}
        converged, change, spread = convergence(lists["ema_fg_dice"])
        # relative to the dataset's results folder: a committed report names no machine's paths
        curves.append({**run, **lists, "checkpoint": os.path.relpath(path, results_dataset_folder),
                       "epochs": len(lists["ema_fg_dice"]),
                       "converged": converged, "last_fifth_change": change, "last_fifth_range": spread})
    return curves

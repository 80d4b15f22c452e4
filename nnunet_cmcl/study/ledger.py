"""A study's finished segmentation runs kept in a folder outside its workdir (``--ledger``), so a study longer than
one machine's stay continues on another: the folder travels (in git, say), the next machine's workdir is rebuilt
from the same seeds, and the kept runs are restored into it as finished.

A run is kept as what the report reads of it, small files only: the validation summaries (also those without
modalities), nnU-Net's training logs and debug.json, the plugin's recorded settings, the per-epoch curves of its
final checkpoint (``CURVES_FILE``, for the convergence table) and the fold's cases (``FOLD_FILE``). Weights are
not kept: a restored run can be reported, not predicted with, so whatever needs its weights (the validation
without modalities) runs before it is kept. Pretrainings are not kept: one is trained again only if a run that
starts from it is unfinished.

Restoring refuses a kept run whose fold holds other cases than the workdir's fold of the same index (another
seed, another data version): it would be reported as a run it is not.
"""
from __future__ import annotations

import json
import os
import shutil

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

from nnunet_cmcl.atomic import write_json_atomically
from nnunet_cmcl.checkpoints import load_checkpoint_safely
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.missing import FOLDER_PREFIX
from nnunet_cmcl.evaluation.curves import CURVES_FILE
from nnunet_cmcl.run_settings import SETTINGS_FILE
from nnunet_cmcl.study.plan import Run
from nnunet_cmcl.study.run_progress import LOG_NAME

FOLD_FILE = "cmcl_fold.json"  # the fold's entry of splits_final.json: the cases the run trained and validated on


def _kept_folder(ledger: str, run: Run) -> str:
    """The run's place in the ledger: its fold folder's path under nnUNet_results."""
    return join(ledger, os.path.relpath(run.fold_folder, str(nnUNet_results)))


def _fold_entry(run: Run) -> dict:
    dataset = os.path.relpath(run.fold_folder, str(nnUNet_results)).split(os.sep)[0]
    return load_json(join(nnUNet_preprocessed, dataset, "splits_final.json"))[int(run.fold)]


def _small_files(fold_folder: str) -> list[str]:
    """The run's files the report reads, relative to its fold folder."""
    names = [n for n in os.listdir(fold_folder) if LOG_NAME.match(n) or n in ("debug.json", SETTINGS_FILE)]
    for folder in os.listdir(fold_folder):
        if (folder == "validation" or folder.startswith(FOLDER_PREFIX)) and isfile(join(fold_folder, folder,
                                                                                         "summary.json")):
            names.append(join(folder, "summary.json"))
    return sorted(names)


def keep_run(run: Run, ledger: str) -> str:
    """Copies a finished segmentation run's small files into the ledger (again each time: a later validation
    without modalities adds files); returns its folder there. The summary is written last, so a copy cut short
    is not a finished run."""
    if run.kind != "segmentation" or not isfile(run.done_file):
        raise ValueError(f"only a finished segmentation run is kept, not {run.label}")
    target = _kept_folder(ledger, run)
    checkpoint = join(run.fold_folder, "checkpoint_final.pth")
    if isfile(checkpoint):  # a restored run has none: its curves are in the ledger already
        os.makedirs(target, exist_ok=True)
        logging = load_checkpoint_safely(checkpoint).get("logging", {})
        # per-epoch numbers, and lists of them per class: numpy's and torch's scalars as floats
        write_json_atomically(json.loads(json.dumps(logging, default=float)), join(target, CURVES_FILE))
    write_json_atomically(_fold_entry(run), join(target, FOLD_FILE))
    names = _small_files(run.fold_folder)
    done = os.path.relpath(run.done_file, run.fold_folder)
    for name in [n for n in names if n != done] + [done]:
        os.makedirs(os.path.dirname(join(target, name)), exist_ok=True)
        shutil.copyfile(join(run.fold_folder, name), join(target, name) + ".tmp")
        os.replace(join(target, name) + ".tmp", join(target, name))
    return target


def restore_runs(runs: list[Run], ledger: str) -> list[Run]:
    """Copies the ledger's kept runs of ``runs`` into their fold folders where those have not finished; returns
    the runs restored. All are checked before any is copied."""
    kept = [r for r in runs if r.kind == "segmentation" and not isfile(r.done_file)
            and isfile(join(_kept_folder(ledger, r), os.path.relpath(r.done_file, r.fold_folder)))]
    for run in kept:
        with open(join(_kept_folder(ledger, run), FOLD_FILE)) as f:
            entry = json.load(f)
        if entry != _fold_entry(run):
            raise CMCLInputError(f"{_kept_folder(ledger, run)} was trained on other cases than fold {run.fold} of "
                                 f"this workdir (another seed or data version): not this study's run; give the "
                                 f"ledger of this study or a new one")
    for run in kept:
        source = _kept_folder(ledger, run)
        for base, _, files in os.walk(source):
            for name in files:
                relative = os.path.relpath(join(base, name), source)
                os.makedirs(os.path.dirname(join(run.fold_folder, relative)), exist_ok=True)
                if relative != os.path.relpath(run.done_file, run.fold_folder):
                    shutil.copyfile(join(base, name), join(run.fold_folder, relative))
        shutil.copyfile(run.done_file.replace(run.fold_folder, source, 1), run.done_file)  # last: then finished
    return kept

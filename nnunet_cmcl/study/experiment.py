"""`nnunet-cmcl experiment`: the whole study with nnU-Net's own commands, resumable.

Pretraining once (fold all), then per fold and label fraction a fine-tuning from it and a vanilla baseline with
the same budget, then `compare`. A run whose results exist is skipped; one that stopped after a checkpoint is
continued with nnU-Net's ``--c``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import dataset_name, trainer_folder, trainer_path
from nnunet_cmcl.study.report import compare_and_report
from nnunet_cmcl.study.splits import write_label_fraction_folds


@dataclass
class Run:
    """One nnUNetv2_train call of the study."""
    label: str
    trainer: str
    fold: str
    fold_folder: str
    pretrained: str | None = None

    @property
    def done_file(self) -> str:
        """Exists once the run is complete (pretraining has no segmentation validation)."""
        if self.fold == "all":
            return join(self.fold_folder, "checkpoint_final.pth")
        return join(self.fold_folder, "validation", "summary.json")


def ensure_splits(name: str, configuration: str, plans: str) -> None:
    """Writes nnU-Net's default 5-fold split (what its do_split would write: seed 12345) if there is none yet."""
    splits_file = join(nnUNet_preprocessed, name, "splits_final.json")
    if not isfile(splits_file):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        identifier = load_json(join(nnUNet_preprocessed, name, plans + ".json"))["configurations"][configuration][
            "data_identifier"]
        folder = join(nnUNet_preprocessed, name, identifier)
        identifiers = sorted(infer_dataset_class(folder).get_identifiers(folder))
        save_json(generate_crossval_split(identifiers, seed=12345, n_splits=5), splits_file)


def fraction_folds(name: str, folds: list[int], fractions: list[float], seed: int) -> dict[tuple[int, float], int]:
    """(source fold, fraction) -> fold index in splits_final.json; fraction 1.0 is the source fold itself."""
    mapping = {(f, 1.0): f for f in folds if 1.0 in fractions}
    partial = [x for x in fractions if x < 1.0]
    if partial:
        for d in write_label_fraction_folds(join(nnUNet_preprocessed, name), partial, seed, folds):
            mapping[(d["source_fold"], d["fraction"])] = d["fold"]
    return mapping


def plan_runs(name: str, configuration: str, plans: str, folds: list[int], fractions: list[float], seed: int,
              pretrainer: str, finetuner: str, baseline: str) -> tuple[list[Run], dict]:
    """The runs of the study in order, and {(fold, fraction): fold index}."""
    def folder(trainer, fold):
        return join(trainer_folder(join(nnUNet_results, name), trainer, plans, configuration), f"fold_{fold}")

    ensure_splits(name, configuration, plans)
    pretrain = Run("pretraining, no labels", pretrainer, "all", folder(pretrainer, "all"))
    runs = [pretrain]
    mapping = fraction_folds(name, folds, fractions, seed)
    for (source, fraction), fold in sorted(mapping.items()):
        what = f"fold {source}, {fraction:g} of its labels (fold {fold})"
        runs.append(Run(f"fine-tuning, {what}", finetuner, str(fold), folder(finetuner, fold),
                        pretrained=pretrain.done_file))
        runs.append(Run(f"baseline, {what}", baseline, str(fold), folder(baseline, fold)))
    return runs, mapping


def command_of(run: Run, dataset: str, configuration: str, plans: str, device: str) -> list[str]:
    command = ["nnUNetv2_train", dataset, configuration, run.fold, "-tr", run.trainer, "-p", plans, "-device", device]
    if any(isfile(join(run.fold_folder, f)) for f in ("checkpoint_latest.pth", "checkpoint_final.pth")):
        # its weights are in the checkpoint (nnU-Net refuses --c with -pretrained_weights); a final checkpoint
        # without validation: --c runs the validation
        return command + ["--c"]
    if run.pretrained:
        command += ["-pretrained_weights", run.pretrained]
    return command


def environment() -> dict:
    """This process's environment with the plugin's trainers visible to nnU-Net."""
    env = dict(os.environ)
    paths = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if trainer_path() not in paths:
        env["nnUNet_extTrainer"] = os.pathsep.join([trainer_path(), *paths])
    return env


def execute(runs: list[Run], dataset: str, configuration: str, plans: str, device: str, log_folder: str) -> None:
    """Runs what is not finished, in order, with progress lines; each run's output goes to a log file."""
    os.makedirs(log_folder, exist_ok=True)
    exe = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_train")
    env = environment()
    for i, run in enumerate(runs, 1):
        head = f"[experiment {i}/{len(runs)}] {run.label} ({run.trainer})"
        if isfile(run.done_file):
            print(f"{head}: finished earlier, skipped", flush=True)
            continue
        command = command_of(run, dataset, configuration, plans, device)
        log = join(log_folder, f"{run.trainer}_fold_{run.fold}.log")
        print(f"{head}: {'resuming' if '--c' in command else 'running'} (log: {log})", flush=True)
        start = time.time()
        with open(log, "a") as f:
            code = subprocess.call([exe if os.path.exists(exe) else command[0], *command[1:]], env=env, stdout=f,
                                   stderr=subprocess.STDOUT)
        if code != 0 or not isfile(run.done_file):
            raise RuntimeError(f"{run.label} failed (exit {code}); see {log}; rerun the same command to resume")
        print(f"{head}: done in {time.time() - start:.0f} s", flush=True)


def check_inputs(dataset: str, configuration: str, plans: str) -> str:
    name = dataset_name(dataset)
    plans_file = join(nnUNet_preprocessed, name, plans + ".json")
    if not isfile(plans_file):
        raise CMCLInputError(f"{plans_file} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    if configuration not in load_json(plans_file)["configurations"]:
        raise CMCLInputError(f"configuration {configuration} is not in {plans_file}")
    return name


def run_experiment(dataset: str, configuration: str, plans: str, folds: list[int], fractions: list[float], seed: int,
                   pretrainer: str, finetuner: str, baseline: str, device: str) -> tuple[dict, dict[str, str]]:
    """Runs (or finishes) the whole study, then compares the fine-tuned trainer with the baseline on every
    fine-tuned fold; returns compare_and_report's (result, paths)."""
    name = check_inputs(dataset, configuration, plans)
    runs, _ = plan_runs(name, configuration, plans, folds, fractions, seed, pretrainer, finetuner, baseline)
    execute(runs, dataset, configuration, plans, device, join(str(nnUNet_results), name, "cmcl_logs"))
    compared = sorted({r.fold for r in runs if r.fold != "all"}, key=int)
    return compare_and_report(dataset, configuration, plans, baseline, finetuner, compared)

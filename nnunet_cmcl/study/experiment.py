"""`nnunet-cmcl experiment`: the runs of a study (``plan``) with nnU-Net's own commands, resumable, then the report.

A run whose results exist is skipped; one that stopped after a checkpoint is continued with nnU-Net's ``--c``.
Neither happens to a fold folder trained with other settings than its trainer has now (run_settings): that is
refused before any run starts, naming the folder.
While a run trains, its epoch, the time per epoch and the time left (read from nnU-Net's log) are printed, with
the whole study's time left.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.formatting import format_duration
from nnunet_cmcl.naming import dataset_name, find_trainer_class, with_plugin_trainers
from nnunet_cmcl.run_settings import settings_mismatch
from nnunet_cmcl.seeding import SeededTraining
from nnunet_cmcl.study.plan import Arm, Run, ensure_splits, labeled_fractions, plan_runs
from nnunet_cmcl.study.run_progress import read_run_progress, study_seconds_left, training_log_seconds, watch

CHECKPOINTS = ("checkpoint_latest.pth", "checkpoint_final.pth")  # either one: the run has started
PROGRESS_INTERVAL = float(os.environ.get("nnUNet_CMCL_progress_interval", "60"))  # seconds between progress lines


def command_of(run: Run, dataset: str, configuration: str, plans: str, device: str) -> list[str]:
    command = ["nnUNetv2_train", run.dataset or dataset, configuration, run.fold, "-tr", run.trainer, "-p",
               run.plans or plans, "-device", device]
    if any(isfile(join(run.fold_folder, f)) for f in CHECKPOINTS):
        # its weights are in the checkpoint (nnU-Net refuses --c with -pretrained_weights); a final checkpoint
        # without validation: --c runs the validation
        return command + ["--c"]
    if run.pretrained:
        command += ["-pretrained_weights", run.pretrained]
    return command


def check_started_runs(runs: list[Run]) -> None:
    """Refuses, before any work, a finished or checkpointed run whose folder the plugin's trainer wrote with other
    settings than the trainer has now (a changed default, a resized budget): skipping or continuing it would
    report an old run as today's trainer."""
    for run in runs:
        started = isfile(run.done_file) or any(isfile(join(run.fold_folder, f)) for f in CHECKPOINTS)
        cls = find_trainer_class(run.trainer) if started else None
        if cls is None or not issubclass(cls, SeededTraining):  # only the plugin's trainers record their settings
            continue
        problem = settings_mismatch(cls, run.fold_folder)
        if problem:
            raise CMCLInputError(f"{run.fold_folder} is not a run of {run.trainer} as it trains now: {problem}; move "
                                 f"the folder away (or give a new workdir) and rerun")


def finished_durations(runs: list[Run]) -> dict[str, list[float]]:
    """The time nnU-Net's logs show for each run finished earlier (an earlier part of a resumed study), by kind of
    run (pretraining or segmentation); runs without a timed log are left out."""
    durations: dict[str, list[float]] = {}
    for run in runs:
        seconds = training_log_seconds(run.fold_folder) if isfile(run.done_file) else None
        if seconds is not None:
            durations.setdefault(run.kind, []).append(seconds)
    return durations


def console_script(name: str) -> str:
    """The command ``name`` of this Python's environment (beside its interpreter), else as found on PATH."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


def environment() -> dict:
    """This process's environment with the plugin's trainers visible to nnU-Net."""
    return {**os.environ, "nnUNet_extTrainer": with_plugin_trainers(os.environ.get("nnUNet_extTrainer"))}


def to_train(run: Run, runs: list[Run]) -> bool:
    """Whether the run still has to train: it has not finished, and a pretraining also has a run starting from it
    that has not (a study continued from its ledger has the finished ones' results without their pretraining)."""
    if isfile(run.done_file):
        return False
    return run.kind != "pretraining" or any(r.pretrained == run.done_file and not isfile(r.done_file) for r in runs)


def execute(runs: list[Run], dataset: str, configuration: str, plans: str, device: str, log_folder: str,
            name: str = "experiment", after: Callable[[Run], None] | None = None) -> None:
    """Runs what is not finished, in order, with progress lines; each run's output goes to a log file.
    ``after(run)`` is called for each segmentation run once it has finished (also one finished earlier)."""
    check_started_runs(runs)
    os.makedirs(log_folder, exist_ok=True)
    env = environment()
    durations = finished_durations(runs)  # by kind of run, for the study's time left from the first line on
    for i, run in enumerate(runs, 1):
        head = f"[{name} {i}/{len(runs)}] {run.label} ({run.trainer})"
        if not to_train(run, runs):
            why = "finished earlier" if isfile(run.done_file) else "not needed (every run from it has finished)"
            print(f"{head}: {why}, skipped", flush=True)
            if after and run.kind == "segmentation":
                after(run)
            continue
        command = command_of(run, dataset, configuration, plans, device)
        log = join(log_folder, f"{run.dataset + '__' if run.dataset else ''}{run.trainer}_fold_{run.fold}.log")
        print(f"{head}: {'resuming' if '--c' in command else 'running'} (log: {log})", flush=True)
        to_start = [r.kind for r in runs[i:] if to_train(r, runs)]

        def study_left(run=run, to_start=to_start) -> str:
            progress = read_run_progress(run.fold_folder)
            current_left, current_whole = (progress.seconds_left, progress.whole_seconds) if progress else (None, None)
            left = study_seconds_left(durations, to_start, run.kind, current_left, current_whole)
            return "" if left is None else f"; {name} about {format_duration(left)} left"

        start = time.time()
        with open(log, "a") as f:
            process = subprocess.Popen([console_script(command[0]), *command[1:]], env=env,
                                       stdout=f, stderr=subprocess.STDOUT)
            code = watch(process, run.fold_folder, head, PROGRESS_INTERVAL, extra=study_left)
        if code != 0 or not isfile(run.done_file):
            raise RuntimeError(f"{run.label} failed (exit {code}); see {log}; rerun the same command to resume")
        seconds = time.time() - start
        durations.setdefault(run.kind, []).append(seconds)
        print(f"{head}: done in {format_duration(seconds)}", flush=True)
        if after and run.kind == "segmentation":
            after(run)


def check_inputs(dataset: str, configuration: str, plans: str) -> str:
    name = dataset_name(dataset)
    plans_file = join(nnUNet_preprocessed, name, plans + ".json")
    if not isfile(plans_file):
        raise CMCLInputError(f"{plans_file} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    if configuration not in load_json(plans_file)["configurations"]:
        raise CMCLInputError(f"configuration {configuration} is not in {plans_file}")
    return name


def default_arms(pretrainer: str, finetuner: str, baseline: str, control: str | None = None,
                 extra: list[tuple[str, str, str]] = ()) -> list[Arm]:
    """The baseline first, then the optional schedule-matched scratch control, CMCL, and extra arms given as
    (label, pretrainer, fine-tuning trainer); with a control, every pretrained arm is also paired with it."""
    paired = "scratch control" if control else None
    arms = [Arm("baseline", baseline)] + ([Arm(paired, control)] if control else [])
    return arms + [Arm("CMCL", finetuner, pretrainer, paired)] + [Arm(label, tr, pre, paired)
                                                                   for label, pre, tr in extra]


def plan_experiment(dataset: str, configuration: str, plans: str, folds: list[int], fractions: list[float] | None,
                    seed: int, arms: list[Arm], train_seeds: list[int] | None = None, labeled: list[int] | None = None,
                    pool: str | None = None, labels_per_seed: bool = False) -> tuple[str, list[Run]]:
    """Every run of the study, in order, with the folds they need added to the splits (nothing else is written);
    returns (dataset name, runs). Label regimes are ``fractions`` of the folds' training cases, or ``labeled``
    numbers of cases (fraction 1 if neither is given); ``labels_per_seed``: each training seed draws its own
    labeled subsets (plan.plan_runs)."""
    name = check_inputs(dataset, configuration, plans)
    if labeled:
        ensure_splits(name, configuration, plans)
        fractions = list(dict.fromkeys((fractions or []) + labeled_fractions(name, folds, labeled)))
    return name, plan_runs(name, configuration, plans, folds, fractions or [1.0], seed, arms, train_seeds,
                           dataset_name(pool) if pool else None, labels_per_seed)


def run_experiment(dataset: str, configuration: str, plans: str, folds: list[int], fractions: list[float] | None,
                   seed: int, arms: list[Arm], device: str, train_seeds: list[int] | None = None,
                   labeled: list[int] | None = None, pool: str | None = None,
                   study: str = "experiment", labels_per_seed: bool = False) -> tuple[str, list[Run]]:
    """Runs (or finishes) every run of the study (``plan_experiment``); returns (dataset name, runs)."""
    name, runs = plan_experiment(dataset, configuration, plans, folds, fractions, seed, arms, train_seeds, labeled,
                                 pool, labels_per_seed)
    execute(runs, dataset, configuration, plans, device, join(str(nnUNet_results), name, "cmcl_logs"), study)
    return name, runs


def missing_runs(runs: list[Run], seeds: list | None, arms: tuple[str, ...] = ()) -> list[Run]:
    """The segmentation runs validated without each modality: the all-labels regime, of ``seeds`` (None: all), of
    the arms labelled ``arms`` (empty: all)."""
    segmentation = [r for r in runs if r.kind == "segmentation"]
    largest = max((r.n_labeled for r in segmentation), default=0)
    return [r for r in segmentation if r.n_labeled == largest and (seeds is None or r.seed in seeds)
            and (not arms or r.arm in arms)]


def pairs_among(controls: dict[str, str], arms: set[str]) -> dict[str, str]:
    """The pairs of ``controls`` (arm -> the arm it is paired with) whose two arms are both among ``arms``: those
    the runs validated without modalities can pair."""
    return {arm: other for arm, other in controls.items() if arm in arms and other in arms}


def with_labeled_subsets(runs: list[dict], name: str) -> list[dict]:
    """Each run's record with the labeled cases it trained on (its fold's training cases in nnU-Net's
    splits_final.json): the statistics refuse to pair runs of other subsets, and leave out an A/A across them."""
    splits = load_json(join(nnUNet_preprocessed, name, "splits_final.json"))
    return [{**run, "labeled": " ".join(sorted(splits[run["fold"]]["train"]))} for run in runs]


def report_experiment(name: str, configuration: str, plans: str, runs: list[Run], arms: list[Arm],
                      study: str = "experiment", missing: dict[str, str] | None = None,
                      missing_seeds: list | None = None, missing_arms: tuple[str, ...] = (),
                      decide: bool = False) -> str:
    """Statistics, tables and plots of the study's segmentation runs against the first arm, written to
    <results>/<dataset>/cmcl_studies/<study>__<plans>__<configuration>/; returns the console text.
    ``missing`` maps a condition name (e.g. 'missing T2') to the validation folder evaluated without it, for the
    runs of ``missing_seeds`` and ``missing_arms`` (``missing_runs``). ``decide``: the defaults rule applied to
    the arms paired with another (evaluation/decision.py), into decisions.md beside the report; with a CMCL and a
    reconstruction arm, the goal checked (evaluation/goal.py), into goal.md."""
    from nnunet_cmcl.evaluation.compare import class_names
    from nnunet_cmcl.evaluation.goal import goal_markdown, goal_of, write_goal
    from nnunet_cmcl.evaluation.curves import learning_curves
    from nnunet_cmcl.evaluation.stats import load_records, study_statistics
    from nnunet_cmcl.evaluation.study_report import format_study_table, write_study_report

    results = join(str(nnUNet_results), name)
    plain = [r.record() for r in runs if r.kind == "segmentation"]
    segmentation = with_labeled_subsets(plain, name)  # the curves in study.json go without the case lists
    records = load_records(results, plans, configuration, segmentation)
    controls = {a.label: a.control for a in arms if a.control}
    result = study_statistics(records, arms[0].label, controls=controls)
    names = class_names(load_json(join(nnUNet_preprocessed, name, "dataset.json")))
    by_condition = over_conditions = None
    if missing:
        from nnunet_cmcl.evaluation.missing_report import ALL_MODALITIES, mean_over_conditions

        chosen = {(r.trainer, int(r.fold)) for r in missing_runs(runs, missing_seeds, missing_arms)}
        at_all_labels = [r for r in segmentation if (r["trainer"], r["fold"]) in chosen]
        by_condition = {ALL_MODALITIES: study_statistics(
            [r for r in records if (r["trainer"], r["fold"]) in chosen], arms[0].label)}
        absent = {c: load_records(results, plans, configuration, at_all_labels, v) for c, v in missing.items()}
        for condition, condition_records in absent.items():
            by_condition[condition] = study_statistics(condition_records, arms[0].label)
        if len(absent) > 1:  # one condition is its own mean; each arm also against its control (dropout's)
            over_conditions = study_statistics(mean_over_conditions(absent), arms[0].label,
                                               controls=pairs_among(controls, {r["arm"] for r in at_all_labels}))
    output = join(results, "cmcl_studies", f"{study}__{plans}__{configuration}")
    paths = write_study_report(result, output, names, learning_curves(results, plans, configuration, plain),
                               by_condition, finished_durations(runs), over_conditions)
    text = format_study_table(result, names)
    if decide:
        from nnunet_cmcl.evaluation.decision import decide_defaults, decisions_markdown, write_decisions

        decisions = decide_defaults(result, over_conditions, names)
        paths["decisions"] = write_decisions(decisions, output)
        text += "\n\n" + decisions_markdown(decisions)
    goal = goal_of(result, records, names)
    if goal:
        paths["goal"] = write_goal(goal, output)
        text += "\n\n" + goal_markdown(goal)
    return text + f"\nwritten: {', '.join(paths.values())}"


def check_modalities(dataset: str, modalities: list[str]) -> None:
    """Refuses, before any training, modality names that are not channels of the dataset ('all' alone: every
    subset)."""
    from nnunet_cmcl.naming import channel_list

    channels = channel_list(load_json(join(nnUNet_preprocessed, dataset_name(dataset), "dataset.json"))[
        "channel_names"])
    if "all" in modalities and "all" not in channels:
        if len(modalities) > 1:
            raise CMCLInputError(f"--missing {' '.join(modalities)}: 'all' (every subset) stands alone; give 'all' "
                                 f"or channel names")
        if len(set(channels)) < 2:
            raise CMCLInputError(f"--missing all: {dataset} has one modality {channels}, no proper subset is absent")
        return
    unknown = [m for m in modalities if m not in channels]
    if unknown:
        raise CMCLInputError(f"--missing {' '.join(unknown)}: not among the channels {channels}; give channel names")


def missing_subsets(dataset: str, modalities: list[str]) -> list[tuple[str, ...]]:
    """The absent-modality conditions of ``--missing``: each named modality alone, or with 'all' every proper
    non-empty subset of the dataset's modalities (2^K - 2)."""
    from nnunet_cmcl.evaluation.missing import absent_subsets, modality_channels

    channel_names = load_json(join(nnUNet_preprocessed, dataset_name(dataset), "dataset.json"))["channel_names"]
    if modalities == ["all"] and "all" not in channel_names.values():
        return absent_subsets(list(modality_channels(channel_names)))
    return [(m,) for m in dict.fromkeys(modalities)]


def evaluate_missing_modalities(name: str, configuration: str, plans: str, runs: list[Run],
                                modalities: list[str] | list[tuple[str, ...]], device: str,
                                seeds: list | None = None, arms: tuple[str, ...] = ()) -> dict[str, str]:
    """Every segmentation run of the all-labels regime (of ``seeds``, None: all; of ``arms``, empty: all)
    validated once per absent condition: a modality name alone, or a tuple of modalities absent together; those
    done are skipped (also a run restored from a study's ledger with its summaries). Returns
    {'missing <A>' or 'missing <A>+<B>': validation folder name} for report_experiment."""
    from nnunet_cmcl.evaluation.missing import absent_subsets, validation_folder

    known = _dataset_modalities(name)
    subsets = _absent_conditions(known, modalities, name)  # checked before the first evaluation
    selections = [["--subsets", "all"]] if set(subsets) == set(absent_subsets(list(known))) else \
        [["--drop", *s] for s in subsets]
    chosen = missing_runs(runs, seeds, arms)
    for i, run in enumerate(chosen, 1):
        head = f"[missing {i}/{len(chosen)}] {run.label}"
        restored = not isfile(join(run.fold_folder, "checkpoint_final.pth"))  # from a ledger, without weights
        if restored and all(isfile(join(run.fold_folder, validation_folder(s), "summary.json")) for s in subsets):
            print(f"{head}: evaluated before it was kept, skipped", flush=True)
            continue
        # in a process of its own, as each run trains: nnU-Net's predictor finds the trainer by importing every
        # module of nnUNet_extTrainer, which in a study running for hours may have changed since its start (a
        # pull of the ledger's repository) and would then not match the modules this process imported
        for selection in selections:
            command = [console_script("nnunet-cmcl"), "evaluate-missing", "-d", name, "-c",
                       configuration, "-tr", run.trainer, "-f", run.fold, "-p", plans, "-device", device, *selection]
            _run_printing_progress(command, head)
    return _conditions(subsets)


def evaluated_without_modalities(name: str, chosen: list[Run],
                                 modalities: list[str] | list[tuple[str, ...]]) -> dict[str, str] | None:
    """The conditions evaluate_missing_modalities returns, once every run it validates (``chosen``, by
    missing_runs) has been validated under each of them; None before. Evaluates nothing: for a report while the
    study runs."""
    from nnunet_cmcl.evaluation.missing import validation_folder

    known = _dataset_modalities(name)
    subsets = _absent_conditions(known, modalities, name)
    evaluated = all(isfile(join(r.fold_folder, validation_folder(s), "summary.json")) for r in chosen for s in subsets)
    return _conditions(subsets) if chosen and evaluated else None


def _dataset_modalities(name: str) -> dict[str, list[int]]:
    """The preprocessed dataset's modalities and their channels (modality_channels of its dataset.json)."""
    from nnunet_cmcl.evaluation.missing import modality_channels

    return modality_channels(load_json(join(nnUNet_preprocessed, name, "dataset.json"))["channel_names"])


def _absent_conditions(known: dict, modalities: list[str] | list[tuple[str, ...]], name: str) -> list[tuple[str, ...]]:
    """Each condition (a modality name alone, or a tuple absent together) checked against the dataset's modalities
    (``known``: modality_channels) and in channel order, as evaluate_missing_subsets names the validation folders."""
    from nnunet_cmcl.evaluation.missing import checked_subset

    return list(dict.fromkeys(checked_subset(known, [m] if isinstance(m, str) else m, name) for m in modalities))


def _conditions(subsets: list[tuple[str, ...]]) -> dict[str, str]:
    """{'missing <A>' or 'missing <A>+<B>': the validation folder evaluated without them} for report_experiment."""
    from nnunet_cmcl.evaluation.missing import SEPARATOR, validation_folder

    return {f"missing {SEPARATOR.join(s)}": validation_folder(s) for s in subsets}


def _run_printing_progress(command: list[str], head: str) -> None:
    """Runs an `nnunet-cmcl evaluate-missing` command, printing its progress lines under ``head``; on failure,
    its last lines and a RuntimeError."""
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith("[evaluate-missing]"):
            print(f"{head}:{line.rstrip()[len('[evaluate-missing]'):]}", flush=True)
    if process.wait() != 0:
        print("\n".join(lines[-20:]), flush=True)
        raise RuntimeError(f"{head}: validation without modalities failed (exit {process.returncode}); rerun the "
                           f"same command to resume")

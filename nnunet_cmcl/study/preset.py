"""`nnunet-cmcl study --preset cpu|tissue`: the whole study on built-in data, on 2 CPU cores, resumable, one command.

Data (``Preset.data``): the BraTS-like built-in dataset (``cpu``: FLAIR, T1w, t1gd, T2w; nnU-Net's tumour regions)
or the simulated brain tissue one (``tissue``: T1, T2, FLAIR; CSF, grey and white matter), with one fold of
``train_cases`` training and ``val_cases`` validation cases, and an unlabeled pool of ``pool_cases`` more subjects,
preprocessed with the study dataset's plans by `prepare`. Pretraining sees the pool plus the fold's training
images, never its validation images. Arms (``tissue``): nnU-Net's default trainer (seeded), and fine-tuning with
nnU-Net's schedule from the default CMCL (dense terms only), from reconstruction only and from the default CMCL +
reconstruction (``cpu`` adds modality dropout on nnU-Net and on CMCL); label regimes of a few labeled cases and
all of them; three training seeds; the first seed's all-labels models also validated under every proper
non-empty subset of absent modalities (6 for three, 14 for four). Plans ``nnUNetPlans_cpuPreset``; a workdir
holding an earlier version's plans is refused. Budgets and sizes: docs/study.md says how they were measured.

Seeds: the preset runs with ``nnUNet_n_proc_DA=1`` unless it is set (one seeded augmentation worker per loader).
A rerun with the same seed is expected to repeat a run bit for bit there, but this is tested only with
``nnUNet_n_proc_DA=0`` (see nnunet_cmcl/seeding.py).

``run_gpu_study``: the same arms with nnU-Net's budgets on a dataset of the user's (`study --preset gpu`).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace

from nnunet_cmcl.atomic import write_json_atomically
from nnunet_cmcl.data.writers import channels_of
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.study.plan import Arm
from nnunet_cmcl.study.workdir import plan_and_preprocess_once, use_workdir

STUDY_PLANS = "nnUNetPlans_cpuPreset"  # nnU-Net's plans with the 2d batch that fits the budget (see docs/study.md)
# the plans of earlier preset versions, whose runs were trained by trainers of other names or settings
RETIRED_STUDY_PLANS = ("nnUNetPlans_cpuStudy",)


@dataclass(frozen=True)
class PresetData:
    """A built-in dataset a preset runs on: its kind for `nnunet-cmcl synth` (data/writers.py), the dataset names
    of the study and of its pool."""
    kind: str
    study_name: str
    pool_name: str


DATA = {"brain": PresetData("brain", "CMCLBrainStudy", "CMCLBrainPool"),
        "brats": PresetData("brats", "CMCLBraTSStudy", "CMCLBraTSPool")}


@dataclass(frozen=True)
class Preset:
    name: str
    dataset_id: int
    pool_id: int
    shape: tuple[int, int, int]
    train_cases: int
    val_cases: int
    pool_cases: int
    configuration: str
    batch_size: int
    labeled: tuple[int, ...]
    train_seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    data: str = "brain"  # the built-in data, a key of DATA
    # what the missing-modality step leaves out, as `experiment --missing` takes it: 'all' is every proper
    # non-empty subset of the modalities, channel names are each left out alone
    absent: tuple[str, ...] = ("all",)
    # each training seed draws its own labeled subsets (plan.plan_runs), so the CIs cover which cases are labeled
    labels_per_seed: bool = False
    # the arms whose all-labels runs are validated without modalities, the first arm among them (the report pairs
    # every arm with it); empty: every arm
    missing_arms: tuple[str, ...] = ()
    # the report applies the defaults rule of docs/method.md to the arms paired with another (decisions.md)
    decides_defaults: bool = False

    @property
    def modalities(self) -> tuple[str, ...]:
        return channels_of(DATA[self.data].kind)

    @property
    def study_name(self) -> str:
        return DATA[self.data].study_name

    @property
    def pool_name(self) -> str:
        return DATA[self.data].pool_name

    @property
    def pool_monitor_cases(self) -> int:
        """The pool's own cases that monitor pretraining retrieval (its validation), never trained on."""
        return max(1, min(4, self.pool_cases // 4))


# Every fine-tuning arm uses nnU-Net's schedule (the fine-tuning trainer's default), so the nnU-Net arm is also
# each pretrained arm's schedule-matched control: from random weights the fine-tuning trainer trains nnU-Net's
# weights bit for bit (tests/test_experiment.py), and a scratch arm would train them again
TISSUE_ARMS = (Arm("nnU-Net", "nnUNetTrainerSeeded_cpuPreset"),
               Arm("CMCL", "nnUNetTrainerCMCLFinetune_cpuPreset", "nnUNetTrainerCMCL_cpuPreset"),
               Arm("reconstruction", "nnUNetTrainerCMCLFinetune_fromRecon_cpuPreset",
                   "nnUNetTrainerCMCL_recon_cpuPreset"),
               Arm("CMCL + reconstruction", "nnUNetTrainerCMCLFinetune_fromDAE_cpuPreset",
                   "nnUNetTrainerCMCL_DAE_cpuPreset"))

# the brain tissue preset (CSF, grey and white matter), the CPU preset until the BraTS-like one replaced it
TISSUE = Preset("tissue", dataset_id=970, pool_id=971, shape=(32, 40, 32), train_cases=16, val_cases=24,
                pool_cases=32, configuration="2d", batch_size=8, labeled=(2, 16), train_seeds=(0, 1, 2),
                arms=TISSUE_ARMS)
# the CPU preset, the BraTS-like benchmark (docs/brats.md): the tissue preset's arms with the BraTS-like
# segmentation and pretraining budgets, and modality dropout with and without CMCL; each seed its own labeled
# cases; a pool 4x the training set; every one of the 14 subsets of absent modalities. Each run costs about 18
# minutes at this budget, so not every arm trains at every regime (36 runs instead of 54; docs/study.md): nnU-Net
# and CMCL at all three, the reconstruction arms at the fewest labels and all, the dropout arms at all labels,
# where the missing-modality validation is
FEWEST_AND_ALL, ALL = (2, 16), (16,)
BRATS_ARMS = (Arm("nnU-Net", "nnUNetTrainerSeeded_brats_cpuPreset"),
              Arm("CMCL", "nnUNetTrainerCMCLFinetune_brats_cpuPreset", "nnUNetTrainerCMCL_brats_cpuPreset"),
              Arm("reconstruction", "nnUNetTrainerCMCLFinetune_fromRecon_brats_cpuPreset",
                  "nnUNetTrainerCMCL_recon_brats_cpuPreset", labeled=FEWEST_AND_ALL),
              Arm("CMCL + reconstruction", "nnUNetTrainerCMCLFinetune_fromDAE_brats_cpuPreset",
                  "nnUNetTrainerCMCL_DAE_brats_cpuPreset", labeled=FEWEST_AND_ALL),
              Arm("nnU-Net + dropout", "nnUNetTrainerSeeded_modalityDropout_brats_cpuPreset", labeled=ALL),
              Arm("CMCL + dropout", "nnUNetTrainerCMCLFinetune_modalityDropout_brats_cpuPreset",
                  "nnUNetTrainerCMCL_brats_cpuPreset", "nnU-Net + dropout", labeled=ALL))

BRATS = Preset("cpu", dataset_id=974, pool_id=975, shape=(48, 56, 48), train_cases=16, val_cases=24, pool_cases=64,
               configuration="2d", batch_size=8, labeled=(2, 4, 16), train_seeds=(0, 1, 2), arms=BRATS_ARMS,
               data="brats", labels_per_seed=True)
# the BraTS-like defaults decided by the rule of docs/method.md, written before these runs: each alternative paired
# with the default it would replace (its ``control``), at the fewest labels and all, on the cpu preset's data, folds,
# seeds and ledger, so the runs both presets hold (nnU-Net, CMCL, nnU-Net + dropout) train once. Only nnU-Net and
# the dropout arms are validated without modalities: the probability is decided there
DEFAULTS_ARMS = (BRATS_ARMS[0], BRATS_ARMS[1],
                 Arm("CMCL + global term", "nnUNetTrainerCMCLFinetune_fromGlobal_brats_cpuPreset",
                     "nnUNetTrainerCMCL_global_brats_cpuPreset", "CMCL", labeled=FEWEST_AND_ALL),
                 Arm("CMCL, bottleneck only", "nnUNetTrainerCMCLFinetune_fromBottleneck_brats_cpuPreset",
                     "nnUNetTrainerCMCL_bottleneck_brats_cpuPreset", "CMCL", labeled=FEWEST_AND_ALL),
                 Arm("CMCL, no full view", "nnUNetTrainerCMCLFinetune_fromNoFull_brats_cpuPreset",
                     "nnUNetTrainerCMCL_noFull_brats_cpuPreset", "CMCL", labeled=FEWEST_AND_ALL),
                 Arm("CMCL, warm-up", "nnUNetTrainerCMCLFinetune_warmup_brats_cpuPreset",
                     "nnUNetTrainerCMCL_brats_cpuPreset", "CMCL", labeled=FEWEST_AND_ALL),
                 BRATS_ARMS[4],
                 Arm("nnU-Net + dropout 0.25", "nnUNetTrainerSeeded_modalityDropout_p25_brats_cpuPreset",
                     control=BRATS_ARMS[4].label, labeled=ALL))
DEFAULTS = replace(BRATS, name="cpu-defaults", arms=DEFAULTS_ARMS,
                   missing_arms=(BRATS_ARMS[0].label, BRATS_ARMS[4].label, "nnU-Net + dropout 0.25"),
                   decides_defaults=True)
PRESETS = {"cpu": BRATS, "cpu-defaults": DEFAULTS, "tissue": TISSUE}


def _step(text: str) -> None:
    print(f"[study] {text}", flush=True)


def _case_ids(name: str, count: int, start: int = 0) -> list[str]:
    return [f"{name}_{i:03d}" for i in range(start, start + count)]


def write_data(preset: Preset) -> tuple[str, str]:
    """The study dataset and the pool in nnUNet_raw (kept if they exist); returns their names."""
    from nnunet_cmcl.data.writers import write_dataset
    from nnunet_cmcl.naming import dataset_name

    raw, data = os.environ["nnUNet_raw"], DATA[preset.data]
    if not any(d.startswith(f"Dataset{preset.dataset_id}_") for d in os.listdir(raw)):
        # 'case i' depends on (seed, i) only: the same subjects each time
        write_dataset(data.kind, raw, preset.dataset_id, data.study_name, preset.train_cases + preset.val_cases,
                      seed=0, shape=preset.shape)
    if not any(d.startswith(f"Dataset{preset.pool_id}_") for d in os.listdir(raw)):
        write_dataset(data.kind, raw, preset.pool_id, data.pool_name, preset.pool_cases, seed=1, with_labels=False,
                      shape=preset.shape)
    # every time, not only after writing the pool: a copy interrupted by a kill is completed by the rerun
    _add_training_images(preset, os.path.join(raw, dataset_name(preset.dataset_id)),
                         os.path.join(raw, dataset_name(preset.pool_id)))
    return dataset_name(preset.dataset_id), dataset_name(preset.pool_id)


def _add_training_images(preset: Preset, study_folder: str, pool_folder: str) -> None:
    """The study fold's training images (not its labels) into the pool: pretraining sees them as unlabeled data."""
    import json

    images = os.path.join(study_folder, "imagesTr")
    for case in _case_ids(preset.study_name, preset.train_cases):
        for channel in range(len(preset.modalities)):
            file = f"{case}_{channel:04d}.nii.gz"
            shutil.copyfile(os.path.join(images, file), os.path.join(pool_folder, "imagesTr", file))
    path = os.path.join(pool_folder, "dataset.json")
    with open(path) as f:
        dataset_json = json.load(f)
    dataset_json["numTraining"] = preset.pool_cases + preset.train_cases
    write_json_atomically(dataset_json, path)


def preprocess(preset: Preset, study: str, pool: str) -> None:
    """nnU-Net's planning and preprocessing of the study dataset, the study plans, the splits, and the pool
    prepared with the study dataset's plans (each step skipped when its output exists)."""
    from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
    from nnunetv2.paths import nnUNet_preprocessed

    folder = join(nnUNet_preprocessed, study)
    retired = [p for p in RETIRED_STUDY_PLANS if isfile(join(folder, p + ".json"))]
    if retired:  # its runs were trained by trainers of other names or settings: not this version's study
        raise CMCLInputError(f"{folder} holds {retired[0]}, the plans of an earlier version of the preset "
                             f"(this one uses {STUDY_PLANS}); give a new --workdir")
    plan_and_preprocess_once(preset.dataset_id, preset.configuration)
    if not isfile(join(folder, STUDY_PLANS + ".json")):
        plans = load_json(join(folder, "nnUNetPlans.json"))
        plans["plans_name"] = STUDY_PLANS
        plans["configurations"][preset.configuration]["batch_size"] = preset.batch_size  # data_identifier kept
        save_json(plans, join(folder, STUDY_PLANS + ".json"), sort_keys=False)
    batch = load_json(join(folder, STUDY_PLANS + ".json"))["configurations"][preset.configuration]["batch_size"]
    if batch != preset.batch_size:  # a workdir of an earlier version of the preset: its runs are not this study's
        raise CMCLInputError(f"{folder} holds {STUDY_PLANS} with batch {batch}, the preset {preset.name!r} uses "
                             f"{preset.batch_size}: an earlier version's workdir; give a new --workdir")
    ids = _case_ids(preset.study_name, preset.train_cases + preset.val_cases)
    if not isfile(join(folder, "splits_final.json")):
        save_json([{"train": ids[:preset.train_cases], "val": ids[preset.train_cases:]}],
                  join(folder, "splits_final.json"))
    pool_folder = join(nnUNet_preprocessed, pool)
    if not isfile(join(pool_folder, "splits_final.json")):
        from nnunet_cmcl.transfer.prepare import prepare

        prepare(study, pool, preset.configuration, STUDY_PLANS, 2, "nnUNetTrainerCMCL")
        pool_ids, monitor = _case_ids(preset.pool_name, preset.pool_cases), preset.pool_monitor_cases
        # the pool's own last cases monitor retrieval; the study's validation images are nowhere in the pool
        save_json([{"train": pool_ids[:-monitor] + ids[:preset.train_cases], "val": pool_ids[-monitor:]}],
                  join(pool_folder, "splits_final.json"))


def run_study(preset: Preset | str, workdir: str, device: str = "cpu", report_only: bool = False,
              ledger: str | None = None) -> str:
    """Runs (or finishes) the preset's study in ``workdir``; returns the report's console text. ``report_only``:
    trains and validates nothing, reports the segmentation runs finished so far (``report_finished``).
    ``ledger``: a folder the finished runs are kept in and restored from (study/ledger.py), so the study goes on
    in a new workdir, on another machine; each run is validated without modalities before it is kept."""
    start = time.time()
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    # nnUNet_n_proc_DA 1: one seeded worker per loader, delivering in order (bit-for-bit reruns are tested with 0
    # only, docs/study.md). nnUNet_def_n_proc 2: nnU-Net's validation export and evaluation pools (8 processes by
    # default) take about 50 s per run to start on 2 cores, more than the 24 cases they then handle
    ledger = os.path.abspath(ledger) if ledger else None  # before use_workdir, which may change the directory
    use_workdir(workdir, nnUNet_n_proc_DA="1", nnUNet_def_n_proc="2", nnUNet_compile="false")
    if report_only:
        return report_finished(preset, ledger)
    # imported once the nnUNet_* variables are set: nnU-Net reads them when its modules are imported
    from batchgenerators.utilities.file_and_folder_operations import join
    from nnunetv2.paths import nnUNet_results

    from nnunet_cmcl.study.experiment import (evaluate_missing_modalities, execute, missing_runs, missing_subsets,
                                              plan_experiment, report_experiment)
    from nnunet_cmcl.study.ledger import keep_run, restore_runs

    _step("1/4 data: the study dataset and the unlabeled pool")
    study, pool = write_data(preset)
    _step("2/4 planning, preprocessing, splits, the pool prepared with the study's plans")
    preprocess(preset, study, pool)
    per_seed = sum(len(a.labeled or preset.labeled) for a in preset.arms)
    _step(f"3/4 training: {len(preset.arms)} arms at {', '.join(map(str, preset.labeled))} labeled cases "
          f"({per_seed} runs a seed) x {len(preset.train_seeds)} seeds, and the pretrainings")
    arms = list(preset.arms)
    name, runs = plan_experiment(study, preset.configuration, STUDY_PLANS, [0], None, 0, arms,
                                 list(preset.train_seeds), list(preset.labeled), pool, preset.labels_per_seed)
    seeds, subsets = seeds_without_modalities(preset), missing_subsets(study, list(preset.absent))
    without_modalities = missing_runs(runs, seeds, preset.missing_arms)
    if ledger:
        restored = restore_runs(runs, ledger)
        _step(f"ledger {ledger}: {len(restored)} finished run(s) restored, each finished run is kept there")

    def keep(run):  # validated without modalities while its weights are here: a kept run has none
        if run in without_modalities:
            evaluate_missing_modalities(name, preset.configuration, STUDY_PLANS, [run], subsets, device)
        keep_run(run, ledger)

    execute(runs, study, preset.configuration, STUDY_PLANS, device, join(str(nnUNet_results), name, "cmcl_logs"),
            f"study {preset.name}", keep if ledger else None)
    _step("4/4 validation under every subset of absent modalities, then the report")
    missing = evaluate_missing_modalities(name, preset.configuration, STUDY_PLANS, runs, subsets, device, seeds,
                                          preset.missing_arms)
    text = report_experiment(name, preset.configuration, STUDY_PLANS, runs, arms, f"preset_{preset.name}", missing,
                             seeds, preset.missing_arms, preset.decides_defaults)
    _step(f"done in {time.time() - start:.0f} s")
    return text


def report_finished(preset: Preset, ledger: str | None = None) -> str:
    """The report of the preset's study so far, written to its own folder (``preset_<name>_partial``), while the
    study runs or between its parts: of each label regime, the seeds whose runs have all finished (every arm is
    paired with the first arm seed by seed, so a seed some arm has not finished is left out whole); the
    missing-modality conditions once every run they cover has been validated under each (evaluated nothing here).
    Refused before the study has its data or one such seed. ``ledger``: its kept runs are restored into the
    workdir first."""
    from batchgenerators.utilities.file_and_folder_operations import isfile, join
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_cmcl.naming import dataset_name
    from nnunet_cmcl.study.experiment import (evaluated_without_modalities, missing_runs, missing_subsets,
                                              plan_experiment, report_experiment)

    command = f"nnunet-cmcl study --preset {preset.name} --workdir DIR"
    study = f"Dataset{preset.dataset_id:03d}_{preset.study_name}"  # as write_data names it
    if not isfile(join(nnUNet_preprocessed, study, STUDY_PLANS + ".json")):
        raise CMCLInputError(f"no study of the preset {preset.name!r} in this workdir yet: run `{command}` first")
    arms = list(preset.arms)
    name, runs = plan_experiment(study, preset.configuration, STUDY_PLANS, [0], None, 0, arms,
                                 list(preset.train_seeds), list(preset.labeled), dataset_name(preset.pool_id),
                                 preset.labels_per_seed)
    if ledger:
        from nnunet_cmcl.study.ledger import restore_runs

        restore_runs(runs, ledger)
    segmentation = [r for r in runs if r.kind == "segmentation"]
    finished = [r for r in segmentation if isfile(r.done_file)]
    unfinished = {(r.n_labeled, r.seed) for r in segmentation if not isfile(r.done_file)}
    complete = [r for r in finished if (r.n_labeled, r.seed) not in unfinished]
    if not complete:
        raise CMCLInputError(f"no label regime has all its runs of one seed finished yet ({len(finished)} of "
                             f"{len(segmentation)} runs): let `{command}` run longer")
    seeds = seeds_without_modalities(preset)
    without = missing_runs(segmentation, seeds, preset.missing_arms)
    # none while its regime has an arm still training: the report pairs no run of that regime yet
    missing = evaluated_without_modalities(study, without, missing_subsets(study, list(preset.absent))) \
        if all(r in complete for r in without) else None
    text = report_experiment(name, preset.configuration, STUDY_PLANS, complete, arms_with_runs(arms, complete),
                             f"preset_{preset.name}_partial", missing, seeds, preset.missing_arms)
    regimes = sorted({(r.n_labeled, r.seed) for r in complete})
    conditions = (f"{len(missing)} absent-modality condition{'s' if len(missing) > 1 else ''} (seed "
                  f"{', '.join(map(str, seeds))}, {without[0].n_labeled} labeled)" if missing
                  else "no missing-modality conditions yet")
    return (f"partial: {len(finished)} of {len(segmentation)} segmentation runs finished; reported: {len(complete)}, "
            f"the seeds every arm has finished ({', '.join(f'{n} labeled seed {s}' for n, s in regimes)}); "
            f"{conditions}\n{text}")


def seeds_without_modalities(preset: Preset) -> list:
    """The training seeds whose all-labels runs are validated without modalities: the first only, as the other
    seeds would triple the cost and the table already has their noise floor."""
    return list(preset.train_seeds[:1])


def arms_with_runs(arms: list[Arm], runs: list) -> list[Arm]:
    """The arms that have runs among ``runs``, in order; an arm whose control has none is paired with the first
    arm only (a partial report, before the regime where the control trains has finished)."""
    present = {r.arm for r in runs}
    kept = [a for a in arms if a.label in present]
    return [a if a.control is None or a.control in present else replace(a, control=None) for a in kept]


# the fine-tuning schedule is nnU-Net's own (no warm-up): nnU-Net's trainer is every pretrained arm's control
GPU_ARMS = (Arm("nnU-Net", "nnUNetTrainerSeeded"),
            Arm("CMCL", "nnUNetTrainerCMCLFinetune", "nnUNetTrainerCMCL"),
            Arm("reconstruction", "nnUNetTrainerCMCLFinetune_fromRecon", "nnUNetTrainerCMCL_recon"),
            Arm("CMCL + reconstruction", "nnUNetTrainerCMCLFinetune_fromDAE", "nnUNetTrainerCMCL_DAE"))


def with_pretraining_plans(arms: list[Arm], dataset: str, configuration: str, plans: str) -> list[Arm]:
    """The arms, each pretraining with plans sized for its pretrainer's step (``write_pretraining_plans``, written
    next to ``plans``): a step that reconstructs through the decoder holds more than the vanilla step, so with
    the target plans it would not fit the GPU they were made for."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_cmcl.plans.pretraining import find_pretraining_trainer, write_pretraining_plans
    from nnunet_cmcl.study.experiment import check_inputs

    folder = join(nnUNet_preprocessed, check_inputs(dataset, configuration, plans))
    target, dataset_json = load_json(join(folder, plans + ".json")), load_json(join(folder, "dataset.json"))
    written = {}
    for pretrainer in dict.fromkeys(a.pretrainer for a in arms if a.pretrainer):
        written[pretrainer], report, _ = write_pretraining_plans(
            folder, target, configuration, dataset_json, find_pretraining_trainer(pretrainer), dataset)
        _step(f"pretraining plans {written[pretrainer]}: {report}")
    return [replace(a, pretraining_plans=written[a.pretrainer]) if a.pretrainer else a for a in arms]


def run_gpu_study(dataset: str, configuration: str = "3d_fullres", plans: str = "nnUNetPlans",
                  device: str = "cuda") -> str:
    """The same study on a planned and preprocessed dataset of the user's with nnU-Net's budgets (1000 epochs):
    5 folds, all labels and 10 % of them, 3 training seeds, every arm, every proper non-empty subset of the
    modalities left out (14 for BraTS's four) at all labels. Each
    pretraining trains with its own plans (``with_pretraining_plans``), the arms with ``plans``."""
    from nnunet_cmcl.study.experiment import (evaluate_missing_modalities, missing_subsets, report_experiment,
                                              run_experiment)

    arms = with_pretraining_plans(list(GPU_ARMS), dataset, configuration, plans)
    name, runs = run_experiment(dataset, configuration, plans, [0, 1, 2, 3, 4], [1.0, 0.1], 0, arms, device,
                                [0, 1, 2], study="study gpu")
    missing = evaluate_missing_modalities(name, configuration, plans, runs, missing_subsets(name, ["all"]), device)
    return report_experiment(name, configuration, plans, runs, arms, "preset_gpu", missing)

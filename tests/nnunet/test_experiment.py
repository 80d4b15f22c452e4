"""The study through nnU-Net's commands, as the preset runs it at a tiny size: an unlabeled pool prepared with the
study's plans, seeded repeats of every run, arms, per-fold pretraining, validation without each modality, the
report; and that a training seed reproduces a run exactly on the CPU."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import EXT_TRAINERS, run

BASELINE, PRETRAINER, FINETUNER = "nnUNetTrainerSeeded_smoke", "nnUNetTrainerCMCL_smoke", \
    "nnUNetTrainerCMCLFinetune_smoke"
STUDY, POOL, PLANS = "Dataset972_CMCLBrainStudy", "Dataset973_CMCLBrainPool", "nnUNetPlans_cpuPreset"
TINY = f"""
from nnunet_cmcl.study.plan import Arm
from nnunet_cmcl.study.preset import Preset, run_study
preset = Preset("tiny", dataset_id=972, pool_id=973, shape=(16, 20, 16), train_cases=4, val_cases=3, pool_cases=3,
                configuration="2d", batch_size=4, labeled=(2,), train_seeds=(0, 1),
                arms=(Arm("nnU-Net", "{BASELINE}"), Arm("CMCL", "{FINETUNER}", "{PRETRAINER}")), absent=("T2",),
                labels_per_seed=True)
print(run_study(preset, WORKDIR, ledger=LEDGER))
"""


def _script(workdir: str, ledger: str | None, script: str = TINY) -> str:
    return script.replace("WORKDIR", repr(workdir)).replace("LEDGER", repr(ledger))


def _ledger(workdir: str) -> str:
    return workdir.rstrip("/") + "_ledger"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[dict, str]:
    """The tiny study's nnU-Net environment and its output, batches drawn in the main process
    (nnUNet_n_proc_DA=0), where a seed fixes everything."""
    workdir = str(tmp_path_factory.mktemp("study"))  # its ledger beside it: _ledger
    env = {**os.environ, "nnUNet_extTrainer": EXT_TRAINERS, "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
           "OMP_NUM_THREADS": "2", "nnUNet_CMCL_progress_interval": "2",
           **{k: join(workdir, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    proc = subprocess.run([sys.executable, "-c", _script(workdir, _ledger(workdir))], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env, proc.stdout


def _fold_folder(env: dict, dataset: str, trainer: str, fold: int) -> str:
    return join(env["nnUNet_results"], dataset, f"{trainer}__{PLANS}__2d", f"fold_{fold}")


def _seeded(env: dict, dataset: str) -> dict:
    splits = load_json(join(env["nnUNet_preprocessed"], dataset, "splits_final.json"))
    return {(s["cmcl_seeded_from"], s["cmcl_train_seed"]): i for i, s in enumerate(splits) if "cmcl_train_seed" in s}


def test_pretraining_sees_the_pool_and_training_images_but_no_validation_image(study):
    env, _ = study
    splits = load_json(join(env["nnUNet_preprocessed"], STUDY, "splits_final.json"))
    pool = load_json(join(env["nnUNet_preprocessed"], POOL, "splits_final.json"))
    for fold in pool:
        assert set(splits[0]["train"]) <= set(fold["train"]) and not set(splits[0]["val"]) & set(fold["train"])
        assert not set(splits[0]["val"]) & set(fold["val"])
    for seed in (0, 1):
        pretraining = _fold_folder(env, POOL, PRETRAINER, _seeded(env, POOL)[(0, seed)])
        assert json.load(open(join(pretraining, "debug.json")))["train_seed"] == str(seed)
        log = next(join(pretraining, f) for f in os.listdir(pretraining) if f.startswith("training_log"))
        assert f"training seed {seed}" in open(log).read()


def test_every_run_is_repeated_per_seed_and_reported_against_the_baseline(study):
    env, out = study
    splits = load_json(join(env["nnUNet_preprocessed"], STUDY, "splits_final.json"))
    # labels per seed: each training seed's 2 labeled cases are drawn with its own label seed
    regimes = {s["cmcl_seed"]: i for i, s in enumerate(splits) if s.get("cmcl_fraction") == 0.5
               and "cmcl_train_seed" not in s}
    assert sorted(regimes) == [0, 1] and splits[regimes[0]]["train"] != splits[regimes[1]]["train"]
    # and each seed repeats its own regime only: no repeat of the other seed's labeled cases
    assert len([s for s in splits if "cmcl_train_seed" in s and "cmcl_fraction" in s]) == 2
    for seed in (0, 1):
        regime = regimes[seed]
        assert len(splits[regime]["train"]) == 2 and splits[regime]["val"] == splits[0]["val"]
        for trainer in (BASELINE, FINETUNER):
            fold = _fold_folder(env, STUDY, trainer, _seeded(env, STUDY)[(regime, seed)])
            assert json.load(open(join(fold, "debug.json")))["train_seed"] == str(seed)
            assert len(load_json(join(fold, "validation", "summary.json"))["metric_per_case"]) == 3
            # without T2 (the preset's absent modality): the first seed's models only
            assert os.path.isfile(join(fold, "validation_missing_T2", "summary.json")) == (seed == 0)
            assert not os.path.exists(join(fold, "validation_missing_T1"))
        source = json.load(open(join(_fold_folder(env, STUDY, FINETUNER, _seeded(env, STUDY)[(regime, seed)]),
                                     "debug.json")))["pretrained_source"]
        assert f"{POOL}/{PRETRAINER}__{PLANS}__2d/fold_{_seeded(env, POOL)[(0, seed)]}" in source
    assert "[study tiny 6/6]" in out and "[study] done" in out
    # progress lines while a run trains (every 2 s here): its epoch out of the total, or that it is starting
    assert re.search(r"\[study tiny \d/6\] [^\n]*\): (starting|epoch \d+/1)", out)
    report = join(env["nnUNet_results"], STUDY, "cmcl_studies", f"preset_tiny__{PLANS}__2d")
    table = open(join(report, "study.md")).read()
    assert "A/A" in table and "CMCL" in table and "white_matter" in table and "missing T2" in table
    rows = json.load(open(join(report, "study.json")))["rows"]
    mean_cmcl = next(r for r in rows if r["class"] == "mean" and r["arm"] == "CMCL")
    assert mean_cmcl["n_labeled"] == 2 and {d["seed"] for d in mean_cmcl["seed_diffs"]} == {0, 1}
    for name in ("dice_vs_labels.png", "learning_curves.png", "missing_modality.png"):
        with open(join(report, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_same_seed_reproduces_a_run_exactly_and_another_seed_does_not(study, tmp_path):
    env, _ = study
    splits = load_json(join(env["nnUNet_preprocessed"], STUDY, "splits_final.json"))
    folds = {s["cmcl_train_seed"]: i for i, s in enumerate(splits) if "cmcl_train_seed" in s and "cmcl_fraction" in s}
    first = _fold_folder(env, STUDY, BASELINE, folds[0])
    # the same fold again, into other results: nnU-Net's command, nothing shared but the data and the seed
    again = {**env, "nnUNet_results": str(tmp_path)}
    run(["nnUNetv2_train", "972", "2d", str(folds[0]), "-tr", BASELINE, "-p", PLANS, "-device", "cpu"], again)
    second = join(str(tmp_path), STUDY, f"{BASELINE}__{PLANS}__2d", f"fold_{folds[0]}")

    def weights(folder):
        return torch.load(join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)[
            "network_weights"]

    a, b, other = weights(first), weights(second), weights(_fold_folder(env, STUDY, BASELINE, folds[1]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)
    dice = [[c["metrics"] for c in load_json(join(f, "validation", "summary.json"))["metric_per_case"]]
            for f in (first, second)]
    assert dice[0] == dice[1]
    # the fine-tuning trainer's default schedule from random weights is nnU-Net's trainer, bit for bit: nothing but
    # the pretrained weights tells a fine-tuned arm from the baseline
    finetuner = "nnUNetTrainerCMCLFinetune_default_smoke"
    run(["nnUNetv2_train", "972", "2d", str(folds[0]), "-tr", finetuner, "-p", PLANS, "-device", "cpu"], again)
    scratch = weights(join(str(tmp_path), STUDY, f"{finetuner}__{PLANS}__2d", f"fold_{folds[0]}"))
    assert all(torch.equal(a[k], scratch[k]) for k in a)


def test_a_rerun_skips_what_finished_and_a_baseline_without_seeds_is_refused(study):
    env, _ = study
    out = run(["nnunet-cmcl", "experiment", "-d", "972", "-c", "2d", "-p", PLANS, "--labeled", "2", "--train-seeds",
               "0", "1", "--labels-per-seed", "--baseline", BASELINE, "--pretrainer", PRETRAINER, "--finetuner",
               FINETUNER, "--pool", "973", "-device", "cpu"], env).stdout
    assert out.count("finished earlier, skipped") == 6 and "A/A" in out
    proc = run(["nnunet-cmcl", "experiment", "-d", "972", "-c", "2d", "-p", PLANS, "--labeled", "2",
                "--labels-per-seed", "-device", "cpu"], env, expect=2)
    assert "--labels-per-seed draws a labeled subset per training seed; give --train-seeds too" in proc.stderr
    proc = run(["nnunet-cmcl", "experiment", "-d", "972", "-c", "2d", "-p", PLANS, "--train-seeds", "0",
                "--baseline", "nnUNetTrainer_5epochs", "--pretrainer", PRETRAINER, "--finetuner", FINETUNER,
                "-device", "cpu"], env, expect=2)
    assert "does not read training seeds" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(["nnunet-cmcl", "experiment", "-d", "972", "-c", "2d", "-p", PLANS, "--missing", "PET",
                "-device", "cpu"], env, expect=2)
    assert "--missing PET: not among the channels" in proc.stderr


def test_a_workdir_of_another_preset_version_is_refused_before_any_run(study):
    env, _ = study
    workdir = os.path.dirname(env["nnUNet_raw"])
    rerun = _script(workdir, _ledger(workdir), TINY.replace("batch_size=4", "batch_size=5"))
    proc = subprocess.run([sys.executable, "-c", rerun], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "batch 4, the preset 'tiny' uses 5" in proc.stderr
    assert "give a new --workdir" in proc.stderr and "3/4 training" not in proc.stdout


def _rerun(env: dict) -> subprocess.CompletedProcess:
    workdir = os.path.dirname(env["nnUNet_raw"])
    return subprocess.run([sys.executable, "-c", _script(workdir, _ledger(workdir))], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_finished_run_of_other_settings_is_refused_not_skipped(study):
    # as after a release that changed the trainer's default: the folder keeps its name, its settings are old
    env, _ = study
    folder = _fold_folder(env, POOL, PRETRAINER, _seeded(env, POOL)[(0, 1)])
    path = join(folder, "cmcl_settings.json")
    original = open(path).read()
    recorded = json.loads(original)
    recorded["settings"]["cmcl_config"]["weight_global"] = 1.0
    try:
        with open(path, "w") as f:
            json.dump(recorded, f)
        proc = _rerun(env)
    finally:
        with open(path, "w") as f:
            f.write(original)
    assert proc.returncode != 0 and f"{folder} is not a run of {PRETRAINER} as it trains now" in proc.stderr
    assert "cmcl_config.weight_global: 1.0 -> 0.0" in proc.stderr and "skipped" not in proc.stdout


def test_a_workdir_of_an_earlier_plans_version_is_refused(study):
    env, _ = study
    retired = join(env["nnUNet_preprocessed"], STUDY, "nnUNetPlans_cpuStudy.json")
    try:
        open(retired, "w").close()
        proc = _rerun(env)
    finally:
        os.remove(retired)
    assert proc.returncode != 0 and "holds nnUNetPlans_cpuStudy, the plans of an earlier version" in proc.stderr


def _report_only(env: dict, workdir: str) -> subprocess.CompletedProcess:
    # without the ledger, which would restore what the test hides
    script = _script(workdir, None, TINY.replace("ledger=LEDGER)", "ledger=LEDGER, report_only=True)"))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


def test_a_partial_report_covers_the_finished_runs_and_trains_nothing(study, tmp_path):
    env, _ = study
    # as while the study runs: the second seed's CMCL run has not finished (no validation summary yet)
    regimes = {s["cmcl_seed"]: i for i, s in enumerate(load_json(join(env["nnUNet_preprocessed"], STUDY,
                                                                      "splits_final.json")))
               if s.get("cmcl_fraction") == 0.5 and "cmcl_train_seed" not in s}
    summary = join(_fold_folder(env, STUDY, FINETUNER, _seeded(env, STUDY)[(regimes[1], 1)]), "validation",
                   "summary.json")
    os.rename(summary, summary + ".hidden")
    try:
        proc = _report_only(env, os.path.dirname(env["nnUNet_raw"]))
        assert not os.path.exists(summary)  # nothing was trained or validated again
    finally:
        os.rename(summary + ".hidden", summary)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "partial: 3 of 4 segmentation runs finished; reported: 2, the seeds every arm has finished (2 labeled " \
           "seed 0); 1 absent-modality condition (seed 0, 2 labeled)" in proc.stdout
    assert "[study tiny" not in proc.stdout
    report = join(env["nnUNet_results"], STUDY, "cmcl_studies", f"preset_tiny_partial__{PLANS}__2d")
    data = json.load(open(join(report, "study.json")))
    mean_cmcl = next(r for r in data["rows"] if r["class"] == "mean" and r["arm"] == "CMCL")
    assert {d["seed"] for d in mean_cmcl["seed_diffs"]} == {0}  # seed 1 left out of both arms
    assert "missing T2" in data["missing_modality"]  # seed 0's runs were validated without T2 as they finished
    # a run of seed 0 not yet validated without T2: the partial report leaves the condition out, evaluating nothing
    absent = join(_fold_folder(env, STUDY, BASELINE, _seeded(env, STUDY)[(regimes[0], 0)]), "validation_missing_T2",
                  "summary.json")
    os.rename(absent, absent + ".hidden")
    try:
        proc = _report_only(env, os.path.dirname(env["nnUNet_raw"]))
        assert not os.path.exists(absent)
    finally:
        os.rename(absent + ".hidden", absent)
    assert proc.returncode == 0 and "seed 1); no missing-modality conditions yet" in proc.stdout
    # before the study has its data, the same command says what to run first
    empty = _report_only({**env, **{k: str(tmp_path / k) for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                    "nnUNet_results")}}, str(tmp_path))
    assert empty.returncode != 0 and "no study of the preset 'tiny' in this workdir yet" in empty.stderr


def test_a_study_goes_on_in_a_new_workdir_from_its_ledger_and_refuses_a_run_of_other_cases(study, tmp_path):
    env, _ = study
    ledger = _ledger(os.path.dirname(env["nnUNet_raw"]))
    kept = sorted(os.path.dirname(os.path.dirname(p)) for p in glob.glob(join(ledger, "**", "validation",
                                                                             "summary.json"), recursive=True))
    assert len(kept) == 4 and not glob.glob(join(ledger, "**", "*.pth"), recursive=True)  # no weights, no pretraining
    for folder in kept:
        names = os.listdir(folder)
        assert {"cmcl_curves.json", "cmcl_fold.json", "cmcl_settings.json", "debug.json"} <= set(names)
        assert any(n.startswith("training_log_") for n in names)
    # the first seed's models were validated without T2 before they were kept, the second seed's are not
    assert len(glob.glob(join(ledger, "**", "validation_missing_T2", "summary.json"), recursive=True)) == 2

    fresh = str(tmp_path / "fresh")  # as on another machine: a new workdir and the ledger
    fresh_env = {**env, **{k: join(fresh, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    proc = subprocess.run([sys.executable, "-c", _script(fresh, ledger)], env=fresh_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 finished run(s) restored" in proc.stdout and "running (log" not in proc.stdout
    assert proc.stdout.count("not needed (every run from it has finished), skipped") == 2
    assert not glob.glob(join(fresh, "**", "*.pth"), recursive=True)  # nothing was trained again
    reports = [join(e["nnUNet_results"], STUDY, "cmcl_studies", f"preset_tiny__{PLANS}__2d") for e in (env, fresh_env)]
    assert open(join(reports[0], "study.csv")).read() == open(join(reports[1], "study.csv")).read()
    before, after = (json.load(open(join(r, "study.json"))) for r in reports)
    assert before["rows"] == after["rows"] and before["missing_modality"] == after["missing_modality"]

    # a kept run whose fold holds other cases (another seed's, another data version's) is not restored
    other = str(tmp_path / "other_ledger")
    shutil.copytree(ledger, other)
    fold_file = join(kept[0].replace(ledger, other, 1), "cmcl_fold.json")
    entry = json.load(open(fold_file))
    entry["train"] = entry["train"][::-1][:1] + entry["val"][:1]
    json.dump(entry, open(fold_file, "w"))
    summary = join(kept[0].replace(ledger, fresh_env["nnUNet_results"], 1), "validation", "summary.json")
    os.remove(summary)
    proc = subprocess.run([sys.executable, "-c", _script(fresh, other)], env=fresh_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "was trained on other cases than fold" in proc.stderr
    assert "running (log" not in proc.stdout and not os.path.exists(summary)


def test_missing_modality_evaluation_finds_the_plugins_trainers(monkeypatch, tmp_path):
    # nnU-Net's predictor runs in the calling process (evaluate-missing's, which the study starts for each run) and
    # finds trainer classes through nnUNet_extTrainer only; the plugin's trainers must be found without the user
    # setting it
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_cmcl.errors import CMCLInputError
    from nnunet_cmcl.evaluation.missing import evaluate_missing

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path))
    with pytest.raises(CMCLInputError, match="Dataset989_Absent"):  # stops at the dataset check, as a user would
        evaluate_missing("Dataset989_Absent", "2d", "nnUNetTrainerSeeded_cpuPreset", 0, "T1", PLANS, "cpu")
    assert recursive_find_trainer_class_by_name("nnUNetTrainerSeeded_cpuPreset").__name__ == \
        "nnUNetTrainerSeeded_cpuPreset"

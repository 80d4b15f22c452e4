"""Segmentation that survives a missing modality, through nnU-Net's commands on a tiny 3-modality phantom:
training with modality dropout, `evaluate-missing --subsets all` (6 subsets, skipped when done), the study's
report over every subset, and `predict --present` on cases whose absent channel has no file."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, load_json, save_json

from conftest import nnunet_env, plan_and_preprocess, run
from nnunet_cmcl.data.synthetic import write_phantom_dataset

DATASET, TRAINER = "Dataset531_Missing", "nnUNetTrainerSeeded_modalityDropout_smoke"
NO_DROPOUT = "nnUNetTrainerSeeded_smoke"  # a test trainer without the modality-dropout mixin
SUBSETS = ("T1", "T2", "FLAIR", "T1+T2", "T1+FLAIR", "T2+FLAIR")


def _model(env: dict, trainer: str = TRAINER) -> str:
    return join(env["nnUNet_results"], DATASET, f"{trainer}__nnUNetPlans__3d_fullres")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, str]:
    """Dataset 531 (T1, T2, FLAIR; 4 cases of 24^3) trained for 3 iterations with modality dropout: (env, stdout)."""
    env = nnunet_env(str(tmp_path_factory.mktemp("missing")))
    write_phantom_dataset(env["nnUNet_raw"], 531, name="Missing", num_cases=4, modalities=("T1", "T2", "FLAIR"),
                          shape=(24, 24, 24), seed=3)
    plan_and_preprocess(531, env)
    # one validation case: every evaluation below predicts it once per subset
    save_json([{"train": ["Missing_000", "Missing_001", "Missing_002"], "val": ["Missing_003"]}],
              join(env["nnUNet_preprocessed"], DATASET, "splits_final.json"))
    proc = run(["nnUNetv2_train", "531", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env)
    return env, proc.stdout


@pytest.fixture(scope="module")
def evaluated(trained) -> str:
    """`evaluate-missing --subsets all` of the trained fold: its stdout."""
    env, _ = trained
    return run(["nnunet-cmcl", "evaluate-missing", "-d", "531", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                "--subsets", "all", "-device", "cpu"], env).stdout


@pytest.fixture(scope="module")
def without_dropout(trained, evaluated) -> str:
    """The same weights and evaluations as the results of a trainer without dropout (the warning reads the
    trainer and its recorded settings, not the weights): its model folder."""
    env, _ = trained
    folder = _model(env, NO_DROPOUT)
    shutil.copytree(_model(env), folder)  # copy2 keeps the times: the evaluations stay newer than the checkpoint
    os.remove(join(folder, "fold_0", "cmcl_settings.json"))
    return folder


def test_training_with_modality_dropout_states_and_records_it(trained):
    env, out = trained
    assert "modality dropout: probability 0.1 per training sample; modalities T1 (channel 0), T2 (channel 1), " \
           "FLAIR (channel 2)" in out and "6 proper non-empty subsets" in out
    fold = join(_model(env), "fold_0")
    assert load_json(join(fold, "cmcl_settings.json"))["settings"]["modality_dropout_probability"] == 0.1
    log = open(next(join(fold, f) for f in os.listdir(fold) if f.startswith("training_log"))).read()
    assert "modality dropout this epoch:" in log and "of 6 training samples" in log  # 3 iterations of batch 2
    assert os.path.isfile(join(fold, "validation", "summary.json"))  # nnU-Net's validation, every modality


def test_evaluate_missing_writes_every_subset_then_skips_them(trained, evaluated):
    env, _ = trained
    fold = join(_model(env), "fold_0")
    written = sorted(f for f in os.listdir(fold) if f.startswith("validation_missing_"))
    assert written == sorted(f"validation_missing_{s}" for s in SUBSETS)  # 2^3 - 2
    summaries = {s: join(fold, f"validation_missing_{s}", "summary.json") for s in SUBSETS}
    assert all(len(load_json(p)["metric_per_case"]) == 1 for p in summaries.values())
    assert "[evaluate-missing] 6/6: without T2+FLAIR, 1 case" in evaluated
    times = {s: os.path.getmtime(p) for s, p in summaries.items()}
    again = run(["nnunet-cmcl", "evaluate-missing", "-d", "531", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                 "--subsets", "all", "-device", "cpu"], env).stdout
    assert "6 evaluated earlier" in again and "1/6" not in again
    assert times == {s: os.path.getmtime(p) for s, p in summaries.items()}
    assert not [f for f in os.listdir(fold) if f.startswith(".")]  # no temporary folder left


STUDY = f"""
from nnunet_cmcl.study.experiment import (check_modalities, evaluate_missing_modalities, missing_subsets,
                                          report_experiment)
from nnunet_cmcl.study.plan import Arm, Run
arms = (("without dropout", "{NO_DROPOUT}", FOLDER_B), ("dropout", "{TRAINER}", FOLDER_A))
runs = [Run(label, trainer, "0", folder, arm=label, source_fold=0, fraction=1.0, n_labeled=3)
        for label, trainer, folder in arms]
check_modalities("{DATASET}", ["all"])
subsets = missing_subsets("{DATASET}", ["all"])
missing = evaluate_missing_modalities("{DATASET}", "3d_fullres", "nnUNetPlans", runs, subsets, "cpu")
print(report_experiment("{DATASET}", "3d_fullres", "nnUNetPlans", runs, [Arm(r.arm, r.trainer) for r in runs],
                        "missing_test", missing))
"""


def test_the_study_reports_every_subset_against_the_baseline(trained, without_dropout):
    env, _ = trained
    script = STUDY.replace("FOLDER_A", repr(join(_model(env), "fold_0"))).replace(
        "FOLDER_B", repr(join(without_dropout, "fold_0")))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 evaluated earlier" in proc.stdout  # nothing predicted again
    report = join(env["nnUNet_results"], DATASET, "cmcl_studies", "missing_test__nnUNetPlans__3d_fullres")
    md = open(join(report, "study.md")).read()
    assert "Mean over the 6 absent-modality conditions" in md and "| missing T1+FLAIR |" in md
    # the same weights under two names: the paired difference over the subsets is 0
    assert "| dropout | " in md and "+0.0000 [+0.0000, +0.0000]" in md
    assert "structure_a" in json.dumps(load_json(join(report, "study.json"))["class_names"])
    with open(join(report, "missing_heatmap.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _cases_without_t2(env: dict, folder: str) -> str:
    images = join(env["nnUNet_raw"], DATASET, "imagesTr")
    os.makedirs(folder)
    for case in ("Missing_000", "Missing_003"):
        for channel in (0, 2):  # T1 and FLAIR; T2 (0001) was never acquired
            shutil.copy(join(images, f"{case}_{channel:04d}.nii.gz"), folder)
    return folder


def test_predict_segments_cases_whose_absent_channel_has_no_file(trained, without_dropout, tmp_path):
    env, _ = trained
    cases, out = _cases_without_t2(env, str(tmp_path / "in")), str(tmp_path / "out")
    proc = run(["nnunet-cmcl", "predict", "-i", cases, "-o", out, "-d", "531", "-c", "3d_fullres", "-f", "0",
                "-tr", NO_DROPOUT, "--present", "T1", "FLAIR", "-device", "cpu"], env)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {NO_DROPOUT} was trained without modality dropout: it never saw missing channels, "
                        f"so expect a lower Dice without T2 than a _modalityDropout trainer gives"]
    for case in ("Missing_000", "Missing_003"):
        segmentation = sitk.ReadImage(join(out, f"{case}.nii.gz"))
        assert segmentation.GetSize() == sitk.ReadImage(join(cases, f"{case}_0000.nii.gz")).GetSize()
    record = load_json(join(out, "predict_present.json"))
    assert record["present"] == ["T1", "FLAIR"] and record["absent"] == ["T2"]
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_the_warning_reads_the_dropout_a_model_was_trained_with(trained, without_dropout, monkeypatch):
    from nnunet_cmcl.evaluation.predict_present import dropout_probability

    env, _ = trained
    monkeypatch.setenv("nnUNet_extTrainer", env["nnUNet_extTrainer"])  # where the test trainers are found
    assert dropout_probability(_model(env), [0], TRAINER) == 0.1  # recorded in its cmcl_settings.json
    assert dropout_probability(without_dropout, [0], NO_DROPOUT) == 0  # no record: its class has no dropout
    assert dropout_probability(without_dropout, [0], "nnUNetTrainer") == 0  # nnU-Net's own


def _main(env: dict, monkeypatch, argv: list[str]) -> int:
    """nnunet-cmcl in this process (no interpreter start-up), with the test's nnU-Net folders."""
    from nnunet_cmcl import cli
    from nnunet_cmcl.evaluation import predict_present

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(predict_present, "nnUNet_results", env["nnUNet_results"])  # read when nnU-Net is imported
    return cli.main(argv)


@pytest.mark.parametrize("present, message", [
    (["T1", "PET"], "--present PET: not a channel of Dataset531_Missing, whose channels are T1, T2, FLAIR"),
    ([], "no present channel: give --present one or more of T1, T2, FLAIR"),
    (["T1", "T2"], "case Missing_000 has no Missing_000_0001.nii.gz (T2), which --present names"),
])
def test_predict_refuses_bad_channels_before_any_work(trained, tmp_path, monkeypatch, capsys, present, message):
    env, _ = trained
    cases, out = _cases_without_t2(env, str(tmp_path / "in")), str(tmp_path / "out")
    assert _main(env, monkeypatch, ["predict", "-i", cases, "-o", out, "-d", DATASET, "-c", "3d_fullres", "-f", "0",
                                    "-tr", TRAINER, "--present", *present, "-device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not os.path.exists(out)

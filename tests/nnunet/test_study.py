"""The comparison users run the plugin for: low-label folds and a paired comparison of real nnU-Net runs."""
import json
import os

import numpy as np
import pytest
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import run

BASELINE, CANDIDATE = "nnUNetTrainer_test", "nnUNetTrainerCMCLFinetune_test"


def test_compare_of_real_runs_equals_hand_computation(phantom_env, baseline, finetuned):
    out = run(["nnunet-cmcl", "compare", "-d", "501", "-c", "3d_fullres", "--baseline", BASELINE,
               "--candidate", CANDIDATE, "--folds", "0"], phantom_env).stdout
    folder = join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom", "cmcl_comparisons",
                  f"{CANDIDATE}_vs_{BASELINE}__nnUNetPlans__3d_fullres")
    for name in ("comparison.md", "comparison.csv", "comparison.json"):
        assert os.path.getsize(join(folder, name)) > 0
    with open(join(folder, "comparison.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    result = json.load(open(join(folder, "comparison.json")))
    base = load_json(join(baseline, "validation", "summary.json"))["metric_per_case"]
    cand = load_json(join(finetuned, "validation", "summary.json"))["metric_per_case"]
    by_case = {os.path.basename(c["reference_file"]): c for c in cand}
    for label in ("1", "2"):
        pairs = [(b["metrics"][label]["Dice"], by_case[os.path.basename(b["reference_file"])]["metrics"][label]["Dice"])
                 for b in base]
        pairs = [(x, y) for x, y in pairs if not (np.isnan(x) or np.isnan(y))]
        row = next(r for r in result["rows"] if r["class"] == label)
        assert row["n"] == len(pairs) == 2  # fold 0 validates 2 of the 8 cases
        assert row["baseline_dice"] == pytest.approx(np.mean([x for x, _ in pairs]))
        assert row["candidate_dice"] == pytest.approx(np.mean([y for _, y in pairs]))
        assert row["diff"] == pytest.approx(np.mean([y - x for x, y in pairs]))
    assert "mean" in out and "Wilcoxon" in open(join(folder, "comparison.md")).read()


def test_compare_refuses_unfinished_fold(phantom_env, baseline, finetuned):
    proc = run(["nnunet-cmcl", "compare", "-d", "501", "-c", "3d_fullres", "--baseline", BASELINE,
                "--candidate", CANDIDATE, "--folds", "0", "3"], phantom_env, expect=2)
    assert "fold 3" in proc.stderr and "Traceback" not in proc.stderr


def test_splits_adds_label_fraction_folds_and_keeps_old_ones(phantom_env, baseline):
    splits_file = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom", "splits_final.json")
    before = load_json(splits_file)
    out = run(["nnunet-cmcl", "splits", "-d", "501", "--fractions", "0.5", "--seed", "1"], phantom_env).stdout
    after = load_json(splits_file)
    assert after[:len(before)] == before and len(after) == len(before) + 5
    assert "fold 5: 0.5 of fold 0 (3 training cases, seed 1), added" in out
    assert set(after[5]["train"]) < set(before[0]["train"]) and after[5]["val"] == before[0]["val"]
    again = run(["nnunet-cmcl", "splits", "-d", "501", "--fractions", "0.5", "--seed", "1"], phantom_env).stdout
    assert load_json(splits_file) == after and "already present" in again


def test_missing_modality_evaluation_and_comparison(phantom_env, baseline, finetuned):
    for trainer in (BASELINE, CANDIDATE):
        run(["nnunet-cmcl", "evaluate-missing", "-d", "501", "-c", "3d_fullres", "-tr", trainer, "-f", "0",
             "--drop", "T2", "-device", "cpu"], phantom_env)
    normal = load_json(join(baseline, "validation", "summary.json"))
    missing = load_json(join(baseline, "validation_missing_T2", "summary.json"))
    assert len(missing["metric_per_case"]) == len(normal["metric_per_case"]) == 2

    def counts(summary):
        return [(c["metrics"][k]["TP"], c["metrics"][k]["FP"]) for c in summary["metric_per_case"] for k in ("1", "2")]

    # the removed channels reach the network: its segmentations change (a 2-epoch model's Dice may be 0 either way)
    assert counts(missing) != counts(normal)
    out = run(["nnunet-cmcl", "compare", "-d", "501", "--baseline", BASELINE, "--candidate", CANDIDATE, "--folds", "0",
               "--validation", "validation_missing_T2"], phantom_env).stdout
    assert "| mean |" in out and "validation_missing_T2" in out
    proc = run(["nnunet-cmcl", "evaluate-missing", "-d", "501", "-tr", BASELINE, "-f", "0", "--drop", "PET",
                "-device", "cpu"], phantom_env, expect=2)
    assert "modality PET is not among the channels" in proc.stderr

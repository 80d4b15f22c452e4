"""Paired comparison of two trainers from summary.json files written by nnU-Net's own evaluation."""
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from scipy.stats import wilcoxon

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.compare import compare, default_output_folder, wilcoxon_p
from nnunet_cmcl.evaluation.comparison_report import format_table, write_report

PLANS, CONFIG = "nnUNetPlans", "3d_fullres"
BASELINE, CANDIDATE = "nnUNetTrainer", "nnUNetTrainerCMCLFinetune"
FOLDS = {0: [f"case_{i:03d}" for i in range(4)], 1: [f"case_{i:03d}" for i in range(4, 8)]}
DATASET_JSON = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 8, "file_ending": ".nii.gz"}


def _reference(i: int, rng) -> np.ndarray:
    seg = np.zeros((10, 10, 10), np.uint8)
    a = rng.integers(1, 3)
    seg[a:a + 4, 1:5, 1:6] = 1
    if i < 6:  # cases 6 and 7 have no label 2: nnU-Net writes NaN Dice where the prediction has none either
        seg[6:9, 5:9, a:a + 3] = 2
    return seg


def _corrupt(seg: np.ndarray, n: int, rng) -> np.ndarray:
    out = seg.copy()
    idx = rng.choice(out.size, size=n, replace=False)
    out.flat[idx] = rng.integers(0, 2, size=n)  # labels 0/1 only, so empty label 2 stays empty
    return out


def _predictions(ref: dict, rng) -> tuple[dict, dict]:
    base = {c: _corrupt(s, 40, rng) for c, s in ref.items()}
    cand = {c: _corrupt(s, 15, rng) for c, s in ref.items()}
    cand["case_001"] = base["case_001"].copy()  # a tie in every class
    cand["case_006"][0, 0, 0:2] = 2  # a false positive: Dice 0 for the candidate, NaN for the baseline
    return base, cand


def _write(seg: np.ndarray, path: str) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(seg), path)


def _trainer_fold(results: str, trainer: str, fold: int, gt: str, preds: dict) -> tuple:
    """Writes the fold's validation predictions like nnU-Net does; returns the evaluation's arguments."""
    base = os.path.join(results, f"{trainer}__{PLANS}__{CONFIG}")
    validation = os.path.join(base, f"fold_{fold}", "validation")
    os.makedirs(validation, exist_ok=True)
    with open(os.path.join(base, "dataset.json"), "w") as fh:
        json.dump(DATASET_JSON, fh)
    for case in FOLDS[fold]:
        _write(preds[case], os.path.join(validation, case + ".nii.gz"))
    return gt, validation, os.path.join(validation, "summary.json"), SimpleITKIO(), ".nii.gz", [1, 2], None, 1


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> str:
    """<nnUNet_results>/Dataset999_Fake with two trainers x 2 folds x 4 cases, evaluated by nnU-Net."""
    root = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(0)
    gt, results = str(root / "gt_segmentations"), str(root / "Dataset999_Fake")
    os.makedirs(gt)
    ref = {c: _reference(i, rng) for i, c in enumerate(sorted(sum(FOLDS.values(), [])))}
    for case, seg in ref.items():
        _write(seg, os.path.join(gt, case + ".nii.gz"))
    base, cand = _predictions(ref, rng)
    jobs = [_trainer_fold(results, t, f, gt, p) for t, p in ((BASELINE, base), (CANDIDATE, cand)) for f in FOLDS]
    with ThreadPoolExecutor(len(jobs)) as pool:  # each call starts its own worker process; overlap them
        list(pool.map(lambda args: compute_metrics_on_folder(*args), jobs))
    return results


def _hand_computed(results: str, trainer: str) -> dict:
    """{(fold, case): {class: Dice}} read from the summary files with plain loops."""
    out = {}
    for fold in FOLDS:
        path = os.path.join(results, f"{trainer}__{PLANS}__{CONFIG}", f"fold_{fold}", "validation", "summary.json")
        with open(path) as fh:
            summary = json.load(fh)
        for entry in summary["metric_per_case"]:
            case = os.path.basename(entry["prediction_file"])[: -len(".nii.gz")]
            out[(fold, case)] = {k: m["Dice"] for k, m in entry["metrics"].items()}
    return out


def _overall(dice: dict) -> float:
    values = [v for v in dice.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def test_statistics_match_a_hand_computation(results):
    result = compare(results, BASELINE, CANDIDATE, PLANS, CONFIG, [0, 1], n_bootstrap=2000, seed=0)
    base, cand = _hand_computed(results, BASELINE), _hand_computed(results, CANDIDATE)
    assert result["n_cases"] == 8 and result["classes"] == ["1", "2"]
    assert [r["class"] for r in result["rows"]] == ["1", "2", "mean"]
    for row in result["rows"]:
        if row["class"] == "mean":
            pairs = [(_overall(base[k]), _overall(cand[k])) for k in base]
        else:
            pairs = [(base[k][row["class"]], cand[k][row["class"]]) for k in base]
        usable = [(b, c) for b, c in pairs if not (math.isnan(b) or math.isnan(c))]
        diffs = [c - b for b, c in usable]
        assert row["n"] == len(usable) and row["n_nan_dropped"] == len(pairs) - len(usable)
        assert row["baseline_dice"] == pytest.approx(sum(b for b, _ in usable) / len(usable))
        assert row["candidate_dice"] == pytest.approx(sum(c for _, c in usable) / len(usable))
        assert row["diff"] == pytest.approx(sum(diffs) / len(diffs))
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert row["wins"] + row["ties"] + row["losses"] == row["n"]
        assert row["ties"] == sum(abs(d) < 1e-8 for d in diffs) >= 1  # case_001 is a tie
        assert row["p_wilcoxon"] == pytest.approx(wilcoxon(diffs).pvalue)
    class2 = result["rows"][1]
    # case_006: baseline NaN / candidate 0, case_007: both NaN -> both dropped for class 2
    assert class2["n_nan_dropped"] == 2 and "NaN" in class2["note"]
    # ...but case_006 stays in "mean", where the candidate's false positive counts against it
    assert result["rows"][2]["n"] == 8
    per_case = {(p["fold"], p["case"]): p for p in result["cases"]}
    assert per_case[(1, "case_006")]["candidate"]["2"] == 0 and math.isnan(per_case[(1, "case_006")]["baseline"]["2"])


def test_too_few_pairs_for_significance_are_named():
    p, note = wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4]))  # all 4 better: as strong as 4 pairs get
    assert p == pytest.approx(0.125) and "smallest possible Wilcoxon p is 0.125" in note
    p, note = wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert p < 0.05 and note == ""


def test_bootstrap_is_reproducible(results):
    a = compare(results, BASELINE, CANDIDATE, PLANS, CONFIG, ["0", "1"], n_bootstrap=500, seed=4)
    b = compare(results, BASELINE, CANDIDATE, PLANS, CONFIG, [0, 1], n_bootstrap=500, seed=4)
    assert [(r["ci_low"], r["ci_high"]) for r in a["rows"]] == [(r["ci_low"], r["ci_high"]) for r in b["rows"]]


def test_identical_trainers_tie_everywhere(results):
    result = compare(results, BASELINE, BASELINE, PLANS, CONFIG, [0], n_bootstrap=100)
    for row in result["rows"]:
        assert row["diff"] == 0 and row["p_wilcoxon"] == 1.0 and row["ties"] == row["n"]
        assert "ties" in row["note"]


def test_missing_fold_summary_names_the_fold(results, tmp_path):
    copy = str(tmp_path / "Dataset999_Fake")
    shutil.copytree(results, copy)
    os.remove(os.path.join(copy, f"{CANDIDATE}__{PLANS}__{CONFIG}", "fold_1", "validation", "summary.json"))
    with pytest.raises(CMCLInputError, match=f"fold 1 of {CANDIDATE} has no validation/summary.json.*--folds"):
        compare(copy, BASELINE, CANDIDATE, PLANS, CONFIG, [0, 1])
    with pytest.raises(CMCLInputError, match="fold 3 of nnUNetTrainer does not exist"):
        compare(copy, BASELINE, CANDIDATE, PLANS, CONFIG, [3])
    with pytest.raises(CMCLInputError, match="there are no results of nnUNetTrainerX"):
        compare(copy, "nnUNetTrainerX", CANDIDATE, PLANS, CONFIG, [0])
    assert not os.path.exists(os.path.join(copy, "cmcl_comparisons"))  # nothing written


def test_different_case_sets_raise(results, tmp_path):
    copy = str(tmp_path / "Dataset999_Fake")
    shutil.copytree(results, copy)
    path = os.path.join(copy, f"{CANDIDATE}__{PLANS}__{CONFIG}", "fold_0", "validation", "summary.json")
    with open(path) as fh:
        summary = json.load(fh)
    summary["metric_per_case"][0]["prediction_file"] = "/elsewhere/case_999.nii.gz"
    with open(path, "w") as fh:
        json.dump(summary, fh)
    with pytest.raises(CMCLInputError, match="fold 0:.*different cases.*only in baseline: case_000.*case_999"):
        compare(copy, BASELINE, CANDIDATE, PLANS, CONFIG, [0, 1])


def test_write_report(results):
    result = compare(results, BASELINE, CANDIDATE, PLANS, CONFIG, [0, 1], n_bootstrap=200)
    out = default_output_folder(results, BASELINE, CANDIDATE, PLANS, CONFIG)
    assert out == os.path.join(results, "cmcl_comparisons", f"{CANDIDATE}_vs_{BASELINE}__{PLANS}__{CONFIG}")
    paths = write_report(result, out)
    assert sorted(os.listdir(out)) == ["comparison.csv", "comparison.json", "comparison.md", "comparison.png"]
    assert set(paths) == {"md", "csv", "json", "png"} and all(os.path.isfile(p) for p in paths.values())
    with open(paths["png"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(paths["png"])
    assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0
    md = open(paths["md"]).read()
    assert format_table(result) in md and "Dataset999_Fake" in md and "| mean |" in md
    lines = open(paths["csv"]).read().splitlines()
    assert lines[0].startswith("class,baseline_dice") and [l.split(",")[0] for l in lines[1:]] == ["1", "2", "mean"]
    with open(paths["json"]) as fh:
        saved = json.load(fh, parse_constant=lambda c: pytest.fail(f"{c} in comparison.json"))  # strict JSON
    assert len(saved["cases"]) == 8 and saved["rows"][2]["diff"] == pytest.approx(result["rows"][2]["diff"])

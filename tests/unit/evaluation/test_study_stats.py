"""Statistics, report and plots of a multi-arm, multi-seed study: hand-computed numbers, nnU-Net's file formats."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key, save_summary_json
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import trainer_folder
from nnunet_cmcl.evaluation.compare import bootstrap_ci, class_names, overall_dice, wilcoxon_p
from nnunet_cmcl.evaluation.paired_differences import plot_paired_differences, read_study_rows
from nnunet_cmcl.evaluation.curves import learning_curves
from nnunet_cmcl.evaluation.stats import hierarchical_bootstrap_ci, load_records, study_statistics
from nnunet_cmcl.evaluation.study_report import format_study_table, write_study_report

PLANS, CONFIG = "nnUNetPlans", "3d_fullres"
NAN = float("nan")
PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- hierarchical bootstrap

def _reference_ci(diffs_by_seed: dict, n_bootstrap: int, rng_seed: int, chunk: int) -> tuple[float, float]:
    """The same draws as hierarchical_bootstrap_ci, then a plain loop over resamples, seeds and cases."""
    arrays = [np.asarray(v, dtype=float) for v in diffs_by_seed.values()]
    sizes = np.array([a.size for a in arrays])
    rng = np.random.default_rng(rng_seed)
    means = []
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        seeds = rng.integers(0, len(arrays), size=(size, len(arrays)))
        cases = rng.integers(0, sizes[seeds][..., None], size=(size, len(arrays), sizes.max()))
        for b in range(size):
            drawn = []
            for j, s in enumerate(seeds[b]):
                drawn += [arrays[s][cases[b, j, i]] for i in range(sizes[s])]
            means.append(sum(drawn) / len(drawn))
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def test_hierarchical_ci_equals_a_slow_reference_loop():
    rng = np.random.default_rng(3)
    diffs = {0: rng.normal(0.02, 0.05, 24), 1: rng.normal(-0.01, 0.05, 20), 2: rng.normal(0.05, 0.05, 24)}
    got = hierarchical_bootstrap_ci(diffs, 2500, 11, chunk=1000)
    assert got == pytest.approx(_reference_ci(diffs, 2500, 11, 1000), abs=1e-12)


def test_hierarchical_ci_with_one_seed_is_the_case_bootstrap():
    values = np.random.default_rng(4).normal(0, 0.1, 30)
    assert hierarchical_bootstrap_ci({7: values}, 3000, 5) == bootstrap_ci(values, 3000, 5)
    assert hierarchical_bootstrap_ci({0: values, 1: []}, 3000, 5) == bootstrap_ci(values, 3000, 5)
    assert all(math.isnan(v) for v in hierarchical_bootstrap_ci({0: []}, 100, 0))


def test_hierarchical_ci_widens_when_seeds_disagree():
    cases = np.random.default_rng(5).normal(0, 0.05, 24)
    agree = {s: cases for s in range(3)}
    disagree = {s: cases + (s - 1) * 0.1 for s in range(3)}
    width = {k: np.diff(hierarchical_bootstrap_ci(d, 4000, 0)).item() for k, d in (("a", agree), ("d", disagree))}
    pooled = np.diff(bootstrap_ci(np.tile(cases, 3), 4000, 0)).item()
    assert width["d"] > 3 * width["a"]
    # identical seeds: drawing seeds adds nothing, what is left is the case bootstrap of all drawn values
    assert width["a"] == pytest.approx(pooled, rel=0.15)


# ---------------------------------------------------------------- study statistics on hand-built records

def _record(arm, seed, case, dice, n_labeled=2, source_fold=0):
    dice = {k: float(v) for k, v in dice.items()}
    return {"arm": arm, "trainer": f"T_{arm}", "fold": 10 + (seed or 0), "source_fold": source_fold,
            "fraction": n_labeled / 8, "n_labeled": n_labeled, "seed": seed, "case": case,
            "dice": {**dice, "mean": overall_dice(dice)}}


# class "1" and "2" of cases a, b, c per (arm, seed); NaN where reference and prediction are both empty
VALUES = {("base", 0): ([0.5, 0.6, 0.7], [NAN, 0.4, 0.5]), ("base", 1): ([0.4, 0.6, 0.8], [0.3, 0.3, 0.3]),
          ("cand", 0): ([0.6, 0.6, 0.9], [0.2, 0.5, 0.5]), ("cand", 1): ([0.3, 0.7, 0.8], [0.4, NAN, 0.1])}


def _records(values=VALUES, n_labeled=2):
    return [_record(arm, seed, case, {"1": one[i], "2": two[i]}, n_labeled)
            for (arm, seed), (one, two) in values.items() for i, case in enumerate("abc")]


def _row(result, arm, key, kind=None, n_labeled=2):
    return next(r for r in result["rows"] if r["arm"] == arm and r["class"] == key and r["n_labeled"] == n_labeled
                and (kind is None or r["kind"] == kind))


def test_study_statistics_equal_hand_computation():
    result = study_statistics(_records(), "base", n_bootstrap=500, rng_seed=3)
    base, cand = _row(result, "base", "1", "baseline"), _row(result, "cand", "1")
    assert base["dice"] == pytest.approx(0.6) and cand["dice"] == pytest.approx((0.7 + 0.6) / 2)
    # seed 0: diffs 0.1, 0, 0.2 (mean 0.1); seed 1: -0.1, 0.1, 0 (mean 0)
    assert [d["diff"] for d in cand["seed_diffs"]] == pytest.approx([0.1, 0.0])
    assert cand["diff"] == pytest.approx(0.05)
    assert (cand["wins"], cand["ties"], cand["losses"], cand["n"]) == (3, 2, 1, 6)
    pooled = np.concatenate([np.subtract(VALUES["cand", s][0], VALUES["base", s][0]) for s in (0, 1)])
    assert cand["p_wilcoxon"] == pytest.approx(wilcoxon_p(pooled)[0])
    expected_ci = hierarchical_bootstrap_ci({0: pooled[:3], 1: pooled[3:]}, 500, 3)
    assert (cand["ci_low"], cand["ci_high"]) == pytest.approx(expected_ci, abs=1e-6)
    assert [r["kind"] for r in result["rows"] if r["class"] == "1"] == ["baseline", "aa", "arm"]
    assert result["classes"] == ["1", "2", "mean"] and result["rows"][0]["class"] == "mean"


def test_arms_are_paired_with_their_schedule_matched_control(tmp_path):
    # the control is 0.2 below the baseline everywhere, the candidate 0.1 above the control: against the baseline
    # the candidate loses 0.1, against its control it wins 0.1
    values = {("base", s): ([0.6, 0.7, 0.8], [0.5, 0.5, 0.5]) for s in (0, 1)}
    values.update({("ctrl", s): ([0.4, 0.5, 0.6], [0.3, 0.3, 0.3]) for s in (0, 1)})
    values.update({("cand", s): ([0.5, 0.6, 0.7], [0.4, 0.4, 0.4]) for s in (0, 1)})
    result = study_statistics(_records(values), "base", n_bootstrap=200, controls={"cand": "ctrl"})
    vs_base, vs_ctrl = _row(result, "cand", "1", "arm"), _row(result, "cand", "1", "control")
    assert vs_base["diff"] == pytest.approx(-0.1) and vs_base["against"] == "base"
    assert vs_ctrl["diff"] == pytest.approx(0.1) and vs_ctrl["against"] == "ctrl"
    assert (vs_ctrl["ci_low"], vs_ctrl["ci_high"]) == pytest.approx((0.1, 0.1))
    assert (vs_ctrl["wins"], vs_ctrl["losses"], vs_ctrl["n"]) == (6, 0, 6)
    assert vs_ctrl["dice"] == pytest.approx(vs_base["dice"])  # the arm's own Dice in both rows
    assert [r["kind"] for r in result["rows"] if r["class"] == "1"] == ["baseline", "aa", "arm", "arm", "control"]
    md = open(write_study_report(result, str(tmp_path), {}, None, None)["md"]).read()
    assert "| cand vs ctrl |" in md and "diff vs control" in md
    with pytest.raises(CMCLInputError, match="controls name arm"):
        study_statistics(_records(values), "base", n_bootstrap=10, controls={"cand": "scratch"})


def test_nan_pairs_are_dropped_and_counted():
    result = study_statistics(_records(), "base", n_bootstrap=200)
    cand, base = _row(result, "cand", "2"), _row(result, "base", "2", "baseline")
    assert (cand["n"], cand["n_nan_dropped"]) == (4, 2)
    # seed 0: cases b, c: 0.1, 0.0; seed 1: cases a, c: 0.1, -0.2
    assert [d["diff"] for d in cand["seed_diffs"]] == pytest.approx([0.05, -0.05])
    assert (cand["wins"], cand["ties"], cand["losses"]) == (2, 1, 1)
    assert "2 pair(s) dropped" in cand["note"]
    assert base["n_dice_nan"] == 1 and base["dice"] == pytest.approx((0.45 + 0.3) / 2)


def test_aa_row_pairs_each_seed_with_the_next():
    values = {("base", s): ([v] * 3, [v] * 3) for s, v in ((0, 0.5), (1, 0.6), (2, 0.8))}
    values |= {("cand", s): ([0.7] * 3, [0.7] * 3) for s in range(3)}
    aa = _row(study_statistics(_records(values), "base", n_bootstrap=200), "base", "1", "aa")
    assert [(d["seed"], d["vs_seed"]) for d in aa["seed_diffs"]] == [(0, 1), (1, 2), (2, 0)]
    assert [d["diff"] for d in aa["seed_diffs"]] == pytest.approx([0.1, 0.2, -0.3])
    assert aa["diff"] == pytest.approx(0.0) and aa["n"] == 9 and (aa["wins"], aa["losses"]) == (6, 3)
    assert aa["ci_low"] < -0.05 and aa["ci_high"] > 0.05  # seed noise of 0.1-0.3 shows in the noise floor


def test_aa_row_with_one_seed_says_it_needs_two():
    values = {k: v for k, v in VALUES.items() if k[1] == 0}
    aa = _row(study_statistics(_records(values), "base", n_bootstrap=200), "base", "mean", "aa")
    assert "at least 2 seeds" in aa["note"] and math.isnan(aa["diff"]) and math.isnan(aa["ci_low"])


def test_aa_row_is_left_out_where_the_seeds_train_on_their_own_labeled_subsets():
    subset = {0: "c1 c2", 1: "c3 c4"}  # each seed its own labeled cases, every arm of a seed the same ones
    own = [{**r, "labeled": subset[r["seed"]]} for r in _records()]
    result = study_statistics(own, "base", n_bootstrap=200)
    aa = _row(result, "base", "mean", "aa")
    assert math.isnan(aa["diff"]) and math.isnan(aa["ci_low"]) and "own labeled subset" in aa["note"]
    assert _row(result, "cand", "1")["diff"] == pytest.approx(0.05)  # the paired arms are unaffected
    shared = [{**r, "labeled": "c1 c2"} for r in _records()]  # all labeled: one subset, an A/A of training noise
    aa = _row(study_statistics(shared, "base", n_bootstrap=200), "base", "mean", "aa")
    assert not math.isnan(aa["ci_low"]) and aa["note"] == ""
    crossed = [{**r, "labeled": "c5 c6" if (r["arm"], r["seed"]) == ("cand", 1) else subset[r["seed"]]}
               for r in _records()]
    message = _one_line_error(crossed)
    assert "cand trained on other labeled cases than baseline base" in message and "seed 1" in message


def _one_line_error(records, baseline="base") -> str:
    with pytest.raises(CMCLInputError) as info:
        study_statistics(records, baseline, n_bootstrap=100)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_seeds_cases_and_baseline_are_refused():
    records = _records()
    message = _one_line_error([r for r in records if not (r["arm"] == "cand" and r["seed"] == 1)])
    assert "cand" in message and "seed 1" in message
    message = _one_line_error([r for r in records if not (r["arm"] == "cand" and r["case"] == "b" and r["seed"])])
    assert "cand" in message and "case b" in message and "seed 1" in message
    assert "'nnU-Net' is not among the arms" in _one_line_error(records, "nnU-Net")
    assert "two runs" in _one_line_error(records + [records[0]])


def test_regimes_are_ordered_by_labels_with_their_fraction():
    result = study_statistics(_records(n_labeled=8) + _records(n_labeled=2), "base", n_bootstrap=100)
    assert [g["n_labeled"] for g in result["regimes"]] == [2, 8]
    assert result["regimes"][1]["fractions"] == [1.0] and result["regimes"][0]["seeds"] == [0, 1]


# ---------------------------------------------------------------- nnU-Net's files

def _summary(cases: dict, validation_folder: str, keys: list) -> dict:
    """nnU-Net's compute_metrics_on_folder result for {case: [Dice per key]}."""
    per_case = []
    for case, dices in cases.items():
        metrics = {k: {"Dice": d, "IoU": d / (2 - d) if not math.isnan(d) else NAN, "FN": 1, "FP": 1, "TN": 9,
                       "TP": 3, "n_pred": 4, "n_ref": 4} for k, d in zip(keys, dices)}
        per_case.append({"metrics": metrics, "prediction_file": os.path.join(validation_folder, case + ".nii.gz"),
                         "reference_file": os.path.join("/gt_segmentations", case + ".nii.gz")})
    mean = {k: {"Dice": float(np.nanmean([c[i] for c in cases.values()]))} for i, k in enumerate(keys)}
    return {"metric_per_case": per_case, "mean": mean, "foreground_mean": {"Dice": 0.5}}


def _write_fold(results, trainer, fold, cases, keys, validation="validation"):
    model = trainer_folder(results, trainer, PLANS, CONFIG)
    folder = os.path.join(model, f"fold_{fold}", validation)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(model, "dataset.json"), "w") as fh:
        json.dump({"labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}, fh)
    save_summary_json(_summary(cases, folder, keys), os.path.join(folder, "summary.json"))


RUNS = [{"arm": arm, "trainer": trainer, "fold": 5 + seed, "source_fold": 0, "fraction": 0.25, "n_labeled": 2,
         "seed": seed} for arm, trainer in (("nnU-Net", "nnUNetTrainer"), ("CMCL", "nnUNetTrainerCMCLFinetune"))
        for seed in (0, 1)]


def test_load_records_reads_nnunet_summaries(tmp_path):
    results = str(tmp_path / "Dataset999_Fake")
    for i, run in enumerate(RUNS):
        _write_fold(results, run["trainer"], run["fold"], {"case_1": [0.8, NAN], "case_0": [0.6 + i / 10, 0.4]}, [1, 2])
    _write_fold(results, "nnUNetTrainer", 5, {"case_1": [0.1, 0.2], "case_0": [0.3, 0.4]}, [1, 2],
                "validation_missing_T2")
    records = load_records(results, PLANS, CONFIG, RUNS)
    assert len(records) == 8 and [r["case"] for r in records[:2]] == ["case_0", "case_1"]
    first = records[0]
    assert {k: first[k] for k in RUNS[0]} == RUNS[0]
    assert first["dice"] == pytest.approx({"1": 0.6, "2": 0.4, "mean": 0.5})
    assert math.isnan(records[1]["dice"]["2"]) and records[1]["dice"]["mean"] == pytest.approx(0.8)
    missing = load_records(results, PLANS, CONFIG, RUNS[:1], "validation_missing_T2")
    assert missing[0]["dice"]["mean"] == pytest.approx(0.35)
    result = study_statistics(records, "nnU-Net", n_bootstrap=100)
    assert _row(result, "CMCL", "1")["seed_diffs"][0]["diff"] == pytest.approx(0.1, abs=1e-9)
    with pytest.raises(CMCLInputError, match="fold 9"):
        load_records(results, PLANS, CONFIG, [{**RUNS[0], "fold": 9}])


def test_region_keys_match_class_names(tmp_path):
    dataset_json = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                               "enhancing tumor": 3}, "regions_class_order": [1, 2, 3]}
    regions = LabelManager(dataset_json["labels"], dataset_json["regions_class_order"]).foreground_regions
    results = str(tmp_path / "Dataset998_Regions")
    _write_fold(results, "nnUNetTrainer", 0, {"case_0": [0.9, 0.8, 0.7]}, regions)
    run = {**RUNS[0], "fold": 0}
    keys = set(load_records(results, PLANS, CONFIG, [run])[0]["dice"])
    names = class_names(dataset_json)
    assert set(names) == keys == {label_or_region_to_key(r) for r in regions} | {"mean"}
    assert names == {"(1, 2, 3)": "whole tumor", "(2, 3)": "tumor core", "3": "enhancing tumor", "mean": "mean"}


def test_class_names_of_labels():
    labels = {"background": 0, "edema": 1, "tumor": 2, "ignore": 3}
    assert class_names({"labels": labels}) == {"1": "edema", "2": "tumor", "mean": "mean"}
    with pytest.raises(CMCLInputError):
        class_names({"channel_names": {"0": "T1"}})


def _save_checkpoint(path: str, ema: list) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    logging = {"ema_fg_dice": [np.float64(x) for x in ema], "mean_fg_dice": list(ema),
               "train_losses": [-x for x in ema], "val_losses": [-x for x in ema], "lrs": [0.01] * len(ema),
               "epoch_start_timestamps": list(range(len(ema))), "epoch_end_timestamps": list(range(len(ema)))}
    torch.save({"network_weights": {"w": torch.zeros(1)}, "logging": logging}, path)


def test_learning_curves_and_convergence(tmp_path):
    results = str(tmp_path / "Dataset997_Curves")
    fold = lambda run: os.path.join(trainer_folder(results, run["trainer"], PLANS, CONFIG), f"fold_{run['fold']}")
    epochs = np.arange(100)
    _save_checkpoint(os.path.join(fold(RUNS[0]), "checkpoint_final.pth"), list(0.8 * (1 - np.exp(-epochs / 8))))
    _save_checkpoint(os.path.join(fold(RUNS[1]), "checkpoint_latest.pth"), list(0.005 * epochs))
    flat, rising = learning_curves(results, PLANS, CONFIG, RUNS[:2])
    assert flat["converged"] and flat["last_fifth_change"] < 1e-3 and flat["epochs"] == 100
    assert not rising["converged"] and rising["last_fifth_change"] == pytest.approx(0.005 * 19)
    assert rising["checkpoint"].endswith("checkpoint_latest.pth") and rising["seed"] == 1
    assert not os.path.isabs(rising["checkpoint"])
    assert os.path.join(results, rising["checkpoint"]) == os.path.join(fold(RUNS[1]), "checkpoint_latest.pth")
    assert isinstance(flat["ema_fg_dice"][0], float) and len(flat["train_losses"]) == 100
    with pytest.raises(CMCLInputError, match="no checkpoint_final.pth"):
        learning_curves(results, PLANS, CONFIG, RUNS[2:3])


# ---------------------------------------------------------------- report

def test_write_study_report_writes_every_file(tmp_path):
    records = _records(n_labeled=2) + _records(n_labeled=8)
    result = study_statistics(records, "base", n_bootstrap=200)
    names = {"1": "edema", "2": "tumor", "mean": "mean"}
    ema = list(np.linspace(0.1, 0.8, 50))
    curves = [{"arm": a, "n_labeled": n, "source_fold": 0, "seed": s, "epochs": 50, "ema_fg_dice": ema,
               "converged": s == 0, "last_fifth_change": 0.1, "last_fifth_range": 0.25} for a in ("base", "cand") for n in (2, 8) for s in (0, 1)]
    missing = {"all modalities": result,
               "missing T2": study_statistics(_records(n_labeled=8), "base", n_bootstrap=200)}
    wall_time = {"pretraining": [100.0, 140.0], "segmentation": [300.0, 240.0, 280.0]}
    paths = write_study_report(result, str(tmp_path / "report"), names, curves, missing, wall_time)
    assert set(paths) == {"md", "csv", "json", "dice_vs_labels", "paired_differences", "learning_curves",
                          "missing_modality", "missing_heatmap"}
    for key in ("dice_vs_labels", "paired_differences", "learning_curves", "missing_modality", "missing_heatmap"):
        with open(paths[key], "rb") as fh:
            assert fh.read(8) == PNG
    md = open(paths["md"]).read()
    assert "### edema" in md and "### tumor" in md and "A/A: base, seeds rotated" in md and "Definitions:" in md
    assert md.index("### mean") < md.index("### edema") and "missing T2" in md
    assert "| pretraining | 2 | 2 min | 4 min |" in md and "| segmentation | 3 | 5 min | 14 min |" in md
    assert "| all | 5 | | 18 min |" in md
    assert "| cand | 8 | 0 | s1 | 50 | no | 0.1000 | 0.2500 |" in md
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 3 and {r["kind"] for r in rows} == {"baseline", "aa", "arm"}
    assert rows[0]["class"] == "mean" and {r["class_name"] for r in rows} == {"mean", "edema", "tumor"}
    data = json.loads(open(paths["json"]).read(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert data["class_names"] == names and data["rows"][0]["wins"] is None
    assert not os.path.exists(str(tmp_path / "report" / "learning_curves.json"))


def test_format_study_table():
    result = study_statistics(_records(n_labeled=2) + _records(n_labeled=8), "base", n_bootstrap=100)
    table = format_study_table(result, {"mean": "mean"}, regime=8)
    assert "8 labeled cases" in table and "2 labeled cases" not in table
    assert table.index("base (baseline)") < table.index("A/A") < table.index("| cand |")
    assert "2 labeled cases" in format_study_table(result, {})
    with pytest.raises(CMCLInputError, match="label regime 5"):
        format_study_table(result, {}, regime=5)


# ---------------------------------------------------------------- paired differences, redrawn from study.csv

# rows of study.csv's schema (the columns the figure reads, and one it does not), as in docs/study_tissue/study.csv
STUDY_CSV = """n_labeled,class,arm,kind,against,diff,ci_low,ci_high,note
2,mean,nnU-Net,baseline,,,,,
2,mean,nnU-Net,aa,nnU-Net,0.0,-0.0018,0.0015,
2,mean,CMCL,arm,nnU-Net,0.0012,-0.0022,0.0044,
2,mean,"CMCL, dense only",arm,nnU-Net,0.0030,0.0021,0.0040,
2,1,CMCL,arm,nnU-Net,0.5,0.4,0.6,
16,mean,nnU-Net,baseline,,,,,
16,mean,nnU-Net,aa,nnU-Net,,,,A/A needs at least 2 seeds
16,mean,CMCL,arm,nnU-Net,0.0027,0.0014,0.0039,
16,mean,"CMCL, dense only",arm,nnU-Net,0.0022,-0.0008,0.0050,
"""


def test_paired_differences_are_redrawn_from_a_study_csv(tmp_path):
    csv_path = tmp_path / "study.csv"
    csv_path.write_text(STUDY_CSV)
    png = str(tmp_path / "paired_differences.png")
    plot_paired_differences(read_study_rows(str(csv_path)), png)
    with open(png, "rb") as fh:
        assert fh.read(8) == PNG
    without_baseline = "".join(line for line in STUDY_CSV.splitlines(keepends=True) if ",baseline," not in line)
    csv_path.write_text(without_baseline)
    with pytest.raises(CMCLInputError, match="n_labeled 2 has no baseline row"):
        plot_paired_differences(read_study_rows(str(csv_path)), png)
    csv_path.write_text(STUDY_CSV.splitlines()[0] + "\n")
    with pytest.raises(CMCLInputError, match="no rows"):
        plot_paired_differences(read_study_rows(str(csv_path)), png)
    csv_path.write_text("arm,dice\nCMCL,0.8\n")
    with pytest.raises(CMCLInputError, match="lacks the column"):
        read_study_rows(str(csv_path))


def test_an_arm_trained_at_some_regimes_only_is_absent_from_the_others(tmp_path):
    """A preset arm with its own label regimes (Arm.labeled): its rows and figures where it ran, 'without runs
    here' where it did not, and its control paired only where both ran."""
    only8 = {("drop", s): values for (arm, s), values in VALUES.items() if arm == "cand"}
    records = _records(n_labeled=2) + _records(n_labeled=8) + _records(only8, n_labeled=8)
    result = study_statistics(records, "base", n_bootstrap=100, controls={"drop": "cand"})
    regimes = {g["n_labeled"]: g for g in result["regimes"]}
    assert regimes[2]["arms_absent"] == ["drop"] and regimes[8]["arms_absent"] == []
    assert {(r["n_labeled"], r["kind"]) for r in result["rows"] if r["arm"] == "drop"} == {(8, "arm"), (8, "control")}
    curves = [{"arm": a, "n_labeled": n, "source_fold": 0, "seed": s, "epochs": 5, "ema_fg_dice": [0.1, 0.2, 0.3,
               0.4, 0.5], "converged": False, "last_fifth_change": 0.1, "last_fifth_range": 0.1}
              for a, regimes_of_arm in (("base", (2, 8)), ("cand", (2, 8)), ("drop", (8,)))
              for n in regimes_of_arm for s in (0, 1)]
    paths = write_study_report(result, str(tmp_path / "report"), {}, curves, None, None)
    assert "- arms without runs here: drop" in open(paths["md"]).read()
    for key in ("dice_vs_labels", "paired_differences", "learning_curves"):
        with open(paths[key], "rb") as fh:
            assert fh.read(8) == PNG

"""The goal of docs/method.md checked on a study's paired rows: CMCL +0.02 ahead of nnU-Net with the fewest labels
(CI excluding 0), not behind it with all labels, ahead of reconstruction-only; the regions where it gains or loses."""
import json

from nnunet_cmcl.evaluation.goal import RECONSTRUCTION, goal_of, reconstruction_records, write_goal
from nnunet_cmcl.evaluation.stats import study_statistics
from paired_records import paired_records

NAMES = {"1": "edema", "2": "enhancing tumour", "mean": "mean"}


def _goal(effects):
    records = paired_records(effects)
    return goal_of(study_statistics(records, "nnU-Net", n_bootstrap=200), records, NAMES)


def test_the_goal_is_met_only_when_all_three_criteria_are():
    goal = _goal({"nnU-Net": {2: {}, 4: {}, 16: {}},
                  "CMCL": {2: {"1": 0.04, "2": 0.03}, 4: {}, 16: {}},
                  RECONSTRUCTION: {2: {"1": 0.01}, 16: {}}})
    assert [c["met"] for c in goal["criteria"]] == [True, True, True] and goal["met"]
    assert goal["criteria"][0]["comparisons"] == ["2 labeled (seeds 0, 1): +0.0350 [+0.0350, +0.0350]"]
    assert goal["criteria"][2]["comparisons"][0].startswith("2 labeled (seeds 0, 1): +0.0300")  # against reconstruction
    assert goal["regions"]["behind"] == [] and goal["regions"]["ahead"][0].startswith("2 labeled (seeds 0, 1), edema: +0.0400")


def test_too_small_a_gain_a_loss_with_all_labels_or_losing_to_reconstruction_each_fail_the_goal(tmp_path):
    goal = _goal({"nnU-Net": {2: {}, 16: {}},
                  "CMCL": {2: {"1": 0.015, "2": 0.015}, 16: {"2": -0.05}},
                  RECONSTRUCTION: {2: {"1": 0.03, "2": 0.03}, 16: {"2": -0.05}}})
    assert [c["met"] for c in goal["criteria"]] == [False, False, False] and not goal["met"]
    assert goal["regions"]["behind"] == ["16 labeled (seeds 0, 1), enhancing tumour: -0.0500 [-0.0500, -0.0500]"]
    text = open(write_goal(goal, str(tmp_path))).read()
    assert "Goal not met." in text and "| few labels |" in text and "| no |" in text
    assert json.load(open(tmp_path / "goal.json"))["criteria"][1]["criterion"] == "all labels"


def test_reconstruction_is_paired_with_cmcl_only_in_the_regimes_both_ran_and_a_study_without_it_has_no_goal():
    records = paired_records({"nnU-Net": {2: {}, 4: {}}, "CMCL": {2: {}, 4: {}}, RECONSTRUCTION: {2: {}}})
    assert {(r["arm"], r["n_labeled"]) for r in reconstruction_records(records)} == {("CMCL", 2), (RECONSTRUCTION, 2)}
    goal = goal_of(study_statistics(records, "nnU-Net", n_bootstrap=200), records, NAMES)
    assert goal["criteria"][2]["comparisons"] == ["2 labeled (seeds 0, 1): +0.0000 [+0.0000, +0.0000]"]
    partial = [r for r in records if not (r["arm"] == "CMCL" and r["n_labeled"] == 2)]  # CMCL's fewest unfinished
    goal = goal_of(study_statistics(partial, "nnU-Net", n_bootstrap=200), partial, NAMES)
    assert [(c["comparisons"], c["met"]) for c in goal["criteria"]] == [
        ([], False), (["4 labeled (seeds 0, 1): +0.0000 [+0.0000, +0.0000]"], True), ([], False)]
    without = [r for r in records if r["arm"] != RECONSTRUCTION]
    assert goal_of(study_statistics(without, "nnU-Net", n_bootstrap=200), without, NAMES) is None


def test_each_comparison_names_the_seeds_it_covers_when_a_partial_report_has_fewer_in_a_regime(tmp_path):
    records = paired_records({"nnU-Net": {2: {}, 16: {}}, "CMCL": {2: {"1": 0.05}, 16: {}},
                              RECONSTRUCTION: {2: {}, 16: {}}})
    partial = [r for r in records if not (r["n_labeled"] == 2 and r["seed"] == 1)]  # seed 1 unfinished at 2 labels
    goal = goal_of(study_statistics(partial, "nnU-Net", n_bootstrap=200), partial, NAMES)
    assert goal["criteria"][0]["comparisons"][0].startswith("2 labeled (seed 0): +0.0250")
    assert goal["criteria"][1]["comparisons"][0].startswith("16 labeled (seeds 0, 1): ")
    assert [c.split(":")[0] for c in goal["criteria"][2]["comparisons"]] == ["2 labeled (seed 0)",
                                                                             "16 labeled (seeds 0, 1)"]
    assert goal["regions"]["ahead"][0].startswith("2 labeled (seed 0), edema: +0.0500")
    assert "Seeds: 0, 1 (each comparison names those it covers)" in open(write_goal(goal, str(tmp_path))).read()

"""The defaults rule of docs/method.md applied to a study's paired rows: an alternative replaces its default only
where it is ahead with a CI excluding 0 somewhere and behind with one nowhere; the dropout probability by its own
rule over the absent conditions."""
import json

from nnunet_cmcl.evaluation.compare import overall_dice
from nnunet_cmcl.evaluation.decision import decide_defaults, write_decisions
from nnunet_cmcl.evaluation.stats import study_statistics

NAMES = {"1": "edema", "2": "tumour", "mean": "mean"}


def _records(effects: dict[str, dict[str, float]], regimes=(2, 16)) -> list[dict]:
    """Arms x regimes x 2 seeds x 6 cases; ``effects[arm][class]`` added to the default's Dice, with a per-case
    spread that keeps the paired CIs narrow around the effect."""
    out = []
    for arm, effect in effects.items():
        for n_labeled in regimes:
            for seed in (0, 1):
                for i in range(6):
                    dice = {k: 0.5 + 0.03 * i + effect.get(k, 0.0) + 0.002 * ((i * 7 + seed) % 3) for k in "12"}
                    out.append({"arm": arm, "trainer": f"T_{arm}", "fold": 10 + seed + 2 * n_labeled,
                                "source_fold": 0, "fraction": n_labeled / 16, "n_labeled": n_labeled, "seed": seed,
                                "case": f"c{i}", "dice": {**dice, "mean": overall_dice(dice)}})
    return out


def test_an_alternative_replaces_its_default_only_if_ahead_somewhere_and_behind_nowhere():
    records = _records({"nnU-Net": {}, "CMCL": {}, "ahead": {"1": 0.05}, "ahead and behind": {"1": 0.05, "2": -0.05},
                        "level": {}})
    controls = {"ahead": "CMCL", "ahead and behind": "CMCL", "level": "CMCL"}
    result = study_statistics(records, "nnU-Net", n_bootstrap=200, controls=controls)
    decisions = {d["arm"]: d for d in decide_defaults(result, None, NAMES)}
    assert [d["replaces_default"] for d in decisions.values()] == [True, False, False]
    assert decisions["ahead"]["default"] == "CMCL" and decisions["ahead"]["comparisons"] == 6  # 2 regimes x 3
    assert any("2 labeled, edema: +0.0500" in w for w in decisions["ahead"]["ahead"])
    assert decisions["ahead and behind"]["behind"] and decisions["level"]["ahead"] == []


def test_the_dropout_probability_moves_only_if_affordable_and_ahead_without_modalities(tmp_path):
    full = _records({"nnU-Net": {}, "dropout": {}, "dropout 0.25": {"1": -0.001}, "dropout 0.5": {"1": -0.05}},
                    (16,))
    absent = _records({"nnU-Net": {}, "dropout": {}, "dropout 0.25": {"1": 0.04}, "dropout 0.5": {"1": 0.08}},
                      (16,))
    controls = {"dropout 0.25": "dropout", "dropout 0.5": "dropout"}
    result = study_statistics(full, "nnU-Net", n_bootstrap=200, controls=controls)
    over = study_statistics(absent, "nnU-Net", n_bootstrap=200, controls=controls)
    decisions = {d["arm"]: d for d in decide_defaults(result, over, NAMES)}
    assert decisions["dropout 0.25"]["rule"] == "dropout" and decisions["dropout 0.25"]["replaces_default"]
    assert not decisions["dropout 0.5"]["replaces_default"]  # ahead without modalities, but costs 0.025 with all
    assert decisions["dropout 0.5"]["ahead"] and "every modality present" in decisions["dropout 0.5"]["behind"][0]
    path = write_decisions(list(decisions.values()), str(tmp_path))
    text = open(path).read()
    assert "| dropout 0.25 | dropout | 1 |" in text and "replaces dropout" in text and "dropout stays" in text
    assert json.load(open(tmp_path / "decisions.json"))[0]["arm"] == "dropout 0.25"

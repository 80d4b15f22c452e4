"""The defaults rule of docs/method.md applied to a study's paired rows: an alternative replaces its default only
where it is ahead with a CI excluding 0 somewhere and behind with one nowhere; the dropout probability by its own
rule over the absent conditions."""
import json

from nnunet_cmcl.evaluation.decision import decide_defaults, write_decisions
from nnunet_cmcl.evaluation.stats import study_statistics
from paired_records import paired_records

NAMES = {"1": "edema", "2": "tumour", "mean": "mean"}


def _records(effects: dict[str, dict[str, float]], regimes=(2, 16)) -> list[dict]:
    """Arms x regimes; ``effects[arm][class]`` the same in every regime."""
    return paired_records({arm: dict.fromkeys(regimes, effect) for arm, effect in effects.items()})


def test_an_alternative_replaces_its_default_only_if_ahead_somewhere_and_behind_nowhere():
    records = _records({"nnU-Net": {}, "CMCL": {}, "ahead": {"1": 0.05}, "ahead and behind": {"1": 0.05, "2": -0.05},
                        "level": {}})
    controls = {"ahead": "CMCL", "ahead and behind": "CMCL", "level": "CMCL"}
    result = study_statistics(records, "nnU-Net", n_bootstrap=200, controls=controls)
    decisions = {d["arm"]: d for d in decide_defaults(result, None, NAMES)}
    assert [d["replaces_default"] for d in decisions.values()] == [True, False, False]
    assert decisions["ahead"]["default"] == "CMCL" and decisions["ahead"]["comparisons"] == 6  # 2 regimes x 3
    assert any("2 labeled (seeds 0, 1), edema: +0.0500" in w for w in decisions["ahead"]["ahead"])
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
    assert "itself costs" not in text  # the default costs nothing here
    assert json.load(open(tmp_path / "decisions.json"))[0]["arm"] == "dropout 0.25"


def test_a_dropout_default_beyond_the_cost_limit_is_said_so(tmp_path):
    """The default probability's own price with every modality present is reported when it exceeds the limit:
    the alternative is judged against the limit, and a default beyond it would otherwise go unmentioned."""
    full = _records({"nnU-Net": {}, "dropout": {"1": -0.06}, "dropout 0.25": {"1": -0.08}}, (16,))
    absent = _records({"nnU-Net": {}, "dropout": {}, "dropout 0.25": {"1": 0.04}}, (16,))
    controls = {"dropout 0.25": "dropout"}
    result = study_statistics(full, "nnU-Net", n_bootstrap=200, controls=controls)
    over = study_statistics(absent, "nnU-Net", n_bootstrap=200, controls=controls)
    decisions = decide_defaults(result, over, NAMES)
    assert not decisions[0]["replaces_default"] and abs(decisions[0]["default_cost"] + 0.03) < 1e-9
    text = open(write_decisions(decisions, str(tmp_path))).read()
    assert "The default dropout itself costs -0.0300 mean Dice against nnU-Net" in text

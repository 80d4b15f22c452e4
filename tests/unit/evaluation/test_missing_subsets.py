"""The subsets of absent modalities that evaluate-missing validates, their folder names, and the command line."""
import itertools
import re

import pytest

from nnunet_cmcl.cli import build_parser
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.missing import absent_subsets, checked_subset, modality_channels, validation_folder

BRATS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}


def test_every_proper_non_empty_subset_once_singles_first():
    brats = absent_subsets(list(modality_channels(BRATS)))
    assert len(brats) == 14 and brats[:4] == [("T1",), ("T1ce",), ("T2",), ("FLAIR",)]
    assert set(brats) == {s for n in (1, 2, 3) for s in itertools.combinations(["T1", "T1ce", "T2", "FLAIR"], n)}
    assert len(absent_subsets(["T1", "T2", "FLAIR"])) == 6 and absent_subsets(["T1", "T2"]) == [("T1",), ("T2",)]


def test_folder_names_keep_the_single_modality_name_and_join_several_in_channel_order():
    modalities = modality_channels(BRATS)
    assert validation_folder(checked_subset(modalities, ["T2"], "D")) == "validation_missing_T2"
    assert validation_folder(checked_subset(modalities, ["FLAIR", "T1", "FLAIR"], "D")) == \
        "validation_missing_T1+FLAIR"


@pytest.mark.parametrize("absent, message", [
    (["PET"], "modality PET is not among the channels ['T1', 'T1ce', 'T2', 'FLAIR'] of D"),
    (["T1", "T1ce", "T2", "FLAIR"], "leaves no modality of D; keep at least one"),
    ([], "no modality to drop"),
])
def test_unknown_names_and_every_modality_are_refused(absent, message):
    with pytest.raises(CMCLInputError, match=re.escape(message)):
        checked_subset(modality_channels(BRATS), absent, "D")


def test_the_command_line_takes_one_or_several_modalities_or_every_subset():
    parse = build_parser().parse_args
    base = ["evaluate-missing", "-d", "1", "-tr", "T", "-f", "0"]
    assert parse(base + ["--drop", "T2"]).drop == ["T2"]
    assert parse(base + ["--drop", "T1", "T2", "--device", "cpu"]).drop == ["T1", "T2"]
    args = parse(base + ["--subsets", "all"])
    assert args.subsets == "all" and args.drop is None
    for bad in (base, base + ["--drop", "T2", "--subsets", "all"]):
        with pytest.raises(SystemExit):
            parse(bad)
    predict = parse(["predict", "-i", "in", "-o", "out", "-d", "1", "-f", "0", "1", "-tr", "T", "--present", "T1"])
    assert predict.f == ["0", "1"] and predict.present == ["T1"] and predict.chk == "checkpoint_final.pth"
    assert parse(["predict", "-i", "in", "-o", "out", "-d", "1", "-f", "0", "-tr", "T", "--present"]).present == []

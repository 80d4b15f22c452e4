"""Label-fraction folds appended to an nnU-Net splits_final.json."""
import json
import os
from types import SimpleNamespace

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.study.splits import add_label_fraction_folds, is_derived, write_label_fraction_folds


def _ids(n: int) -> list[str]:
    return [f"case_{i:03d}" for i in range(n)]


@pytest.fixture
def folder(tmp_path) -> str:
    """A preprocessed dataset folder holding the 5-fold split nnU-Net makes for 10 cases."""
    splits = generate_crossval_split(_ids(10), seed=12345, n_splits=5)
    with open(tmp_path / "splits_final.json", "w") as fh:
        json.dump(splits, fh, sort_keys=True, indent=4)  # as nnU-Net's save_json writes it
    return str(tmp_path)


def _load(folder: str) -> list[dict]:
    with open(os.path.join(folder, "splits_final.json")) as fh:
        return json.load(fh)


def test_adds_fraction_folds_after_the_existing_ones(folder):
    before = _load(folder)
    descriptions = write_label_fraction_folds(folder, [0.1, 0.5], seed=3)
    after = _load(folder)
    assert after[:5] == before  # content and order of nnU-Net's folds untouched
    assert len(after) == 5 + 10 and [d["fold"] for d in descriptions] == list(range(5, 15))
    for d in descriptions:
        new, source = after[d["fold"]], before[d["source_fold"]]
        expected = max(1, round(d["fraction"] * len(source["train"])))
        assert set(new["train"]) <= set(source["train"]) and len(new["train"]) == expected == d["n_train"]
        assert new["train"] == sorted(new["train"]) and len(set(new["train"])) == expected
        assert new["val"] == source["val"]
        assert (new["cmcl_source_fold"], new["cmcl_fraction"], new["cmcl_seed"]) == \
               (d["source_fold"], d["fraction"], 3)
        assert d["seed"] == 3 and d["existed"] is False
    assert sorted((d["source_fold"], d["fraction"]) for d in descriptions) == \
           sorted((k, f) for k in range(5) for f in (0.1, 0.5))


def test_rerun_is_idempotent_and_never_derives_from_derived_folds(folder):
    first = write_label_fraction_folds(folder, [0.1, 0.5], seed=3)
    content = _load(folder)
    second = write_label_fraction_folds(folder, [0.1, 0.5], seed=3)
    assert _load(folder) == content  # no duplicates, nothing derived from folds 5..14
    assert [d["fold"] for d in second] == [d["fold"] for d in first]
    assert all(d["existed"] for d in second)


def test_subsets_are_reproducible_and_depend_on_the_seed():
    splits = generate_crossval_split(_ids(100), seed=12345, n_splits=5)
    a, _ = add_label_fraction_folds(splits, [0.5], seed=0)
    b, _ = add_label_fraction_folds(splits, [0.5], seed=0)
    c, _ = add_label_fraction_folds(splits, [0.5], seed=1)
    assert a == b
    # 40 of 80 cases: C(80, 40) ~ 1e23 subsets, so two seeds giving the same one is out of the question
    assert all(a[i]["train"] != c[i]["train"] for i in range(5, 10))
    # the source list's order does not matter, only its content
    shuffled = [{"train": s["train"][::-1], "val": s["val"]} for s in splits]
    d, _ = add_label_fraction_folds(shuffled, [0.5], seed=0)
    assert [s["train"] for s in d[5:]] == [s["train"] for s in a[5:]]
    assert splits == generate_crossval_split(_ids(100), seed=12345, n_splits=5)  # input not modified


def test_another_seed_adds_new_folds(folder):
    write_label_fraction_folds(folder, [0.5], seed=0, source_folds=[0])
    described = write_label_fraction_folds(folder, [0.5], seed=1, source_folds=[0])
    assert described[0]["fold"] == 6 and not described[0]["existed"] and len(_load(folder)) == 7


def test_nnunet_do_split_reads_the_new_fold(folder):
    descriptions = write_label_fraction_folds(folder, [0.5], seed=0, source_folds=[2])
    fold = descriptions[0]["fold"]

    class _Dataset:  # do_split only constructs it in the fold != 'all' branch
        def __init__(self, *args, **kwargs):
            self.identifiers = _ids(10)

    trainer = SimpleNamespace(dataset_class=_Dataset, fold=fold, preprocessed_dataset_folder=folder,
                              preprocessed_dataset_folder_base=folder, folder_with_segs_from_previous_stage=None,
                              print_to_log_file=lambda *args, **kwargs: None)
    tr_keys, val_keys = nnUNetTrainer.do_split(trainer)  # nnU-Net's own code, on the written file
    splits = _load(folder)
    assert tr_keys == splits[fold]["train"] and len(tr_keys) == 4
    assert val_keys == splits[2]["val"]


def test_bad_inputs(folder, tmp_path):
    with pytest.raises(CMCLInputError, match="splits_final.json does not exist.*nnUNetv2_train"):
        write_label_fraction_folds(str(tmp_path / "nowhere"), [0.5])
    for bad in (0, 1, 1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(CMCLInputError, match="between 0 and 1"):
            write_label_fraction_folds(folder, [bad])
    with pytest.raises(CMCLInputError, match="source fold 7 is not in splits_final.json"):
        write_label_fraction_folds(folder, [0.5], source_folds=[7])
    write_label_fraction_folds(folder, [0.5], source_folds=[0])
    with pytest.raises(CMCLInputError, match="fold 5 is itself derived from fold 0"):
        write_label_fraction_folds(folder, [0.5], source_folds=[5])
    with pytest.raises(CMCLInputError, match="nnU-Net's format"):
        add_label_fraction_folds([{"train": ["a"]}], [0.5])


def test_train_seed_repeats_keep_train_val_and_fraction_and_are_reused():
    from nnunet_cmcl.seeding import TRAIN_SEED_KEY
    from nnunet_cmcl.study.splits import SEEDED_FROM_KEY, add_train_seed_folds

    base = [{"train": ["a", "b", "c", "d"], "val": ["e"]}, {"train": ["b", "c", "d", "e"], "val": ["a"]}]
    with_fraction, _ = add_label_fraction_folds(base, [0.5], seed=3, source_folds=[0])
    out, mapping = add_train_seed_folds(with_fraction, [0, 2], [0, 1])
    assert out[:3] == with_fraction and len(out) == 7
    assert mapping == {(0, 0): 3, (0, 1): 4, (2, 0): 5, (2, 1): 6}
    for (fold, seed), index in mapping.items():
        repeat = out[index]
        assert repeat["train"] == out[fold]["train"] and repeat["val"] == out[fold]["val"]
        assert repeat[TRAIN_SEED_KEY] == seed and repeat[SEEDED_FROM_KEY] == fold
    assert out[5]["cmcl_fraction"] == 0.5  # a repeat of a label-fraction fold is one too
    again, mapping_again = add_train_seed_folds(out, [0, 2], [1, 0, 2])
    assert again[:7] == out and len(again) == 9 and mapping_again[(0, 1)] == 4 and mapping_again[(0, 2)] == 7
    # derived folds are never a source of label fractions or of further repeats
    with pytest.raises(CMCLInputError, match="fold 3 is itself derived from fold 0"):
        add_label_fraction_folds(out, [0.5], source_folds=[3])
    with pytest.raises(CMCLInputError, match="repeat fold 0 instead"):
        add_train_seed_folds(out, [3], [5])
    assert [i for i, s in enumerate(out) if not is_derived(s)] == [0, 1]

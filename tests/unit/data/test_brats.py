"""Tests for nnunet_cmcl.data.brats: layout and nnU-Net's BraTS regions in dataset.json, nested sub-regions inside
the brain, the look-alikes that keep every single-channel threshold from segmenting a region, reproducibility, the
unlabeled pool. nnU-Net's integrity check of the same writer's output: tests/nnunet/test_synth_cli.py."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation

pytest.importorskip("nilearn")
from nnunet_cmcl.data.brats import CHANNELS, DEFAULT_SHAPE, brats_case, write_brats_dataset  # noqa: E402
from nnunet_cmcl.data.synthetic import _mni152  # noqa: E402

N = 6
REGIONS = {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}


@pytest.fixture(scope="module")
def cases() -> list[tuple[np.ndarray, np.ndarray]]:
    template, _ = _mni152(DEFAULT_SHAPE)
    return [brats_case(np.random.default_rng([0, i]), template) for i in range(N)]


def _brain(images: np.ndarray) -> np.ndarray:
    t1 = images[CHANNELS.index("T1w")]
    return t1 > 0.1 * t1.max()


def test_dataset_json_layout_and_the_pool(tmp_path):
    folder = write_brats_dataset(str(tmp_path), 12, num_cases=2, shape=(32, 40, 32), seed=3)
    pool = write_brats_dataset(str(tmp_path), 13, name="Pool", num_cases=2, shape=(32, 40, 32), seed=4,
                               with_labels=False)
    assert sorted(os.listdir(tmp_path)) == ["Dataset012_CMCLBraTS", "Dataset013_Pool"]  # no temp folder left
    with open(os.path.join(folder, "dataset.json")) as f:
        dj = json.load(f)
    assert dj["channel_names"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # MSD Task01's names
    # nnU-Net's BraTS conversion: regions as label lists, the order in which they are painted at inference
    assert dj["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert dj["regions_class_order"] == [1, 2, 3] and dj["numTraining"] == 2
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == [
        f"CMCLBraTS_{i:03d}_{c:04d}.nii.gz" for i in range(2) for c in range(4)]
    label = sitk.ReadImage(os.path.join(folder, "labelsTr", "CMCLBraTS_000.nii.gz"))
    assert label.GetPixelID() == sitk.sitkUInt8 and label.GetSize() == (32, 40, 32)[::-1]
    assert not os.path.exists(os.path.join(pool, "labelsTr")) and len(os.listdir(os.path.join(pool, "imagesTr"))) == 8


def test_cases_repeat_by_seed_and_differ_across_seeds():
    template, _ = _mni152((32, 40, 32))
    a, b = (brats_case(np.random.default_rng([0, 1]), template) for _ in range(2))
    other = brats_case(np.random.default_rng([1, 1]), template)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], other[1])


def test_tumours_are_nested_inside_the_brain(cases):
    for images, labels in cases:
        brain = _brain(images)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3} and (labels > 0).any()
        assert not (labels[~binary_dilation(brain, iterations=2)] > 0).any()  # tumours stay in the brain
        # edema surrounds the core: no core voxel touches background inside the brain
        core = np.isin(labels, (2, 3))
        assert not (binary_dilation(core) & (labels == 0) & brain).any()
    # over the cases every sub-region occurs
    present = np.array([[(labels == k).any() for k in (1, 2, 3)] for _, labels in cases])
    assert present.any(0).all()


def _best_threshold_dice(cases, region: tuple[int, ...]) -> float:
    """The best mean Dice over cases of one fixed threshold (either side) of one channel, z-scored inside the
    brain as nnU-Net normalises MRI: what a single channel can segment at best without context."""
    edges = np.linspace(-3, 5, 81)
    best = 0.0
    for c in range(len(CHANNELS)):
        above, below = [], []  # per case and threshold: Dice of "z > t" and of "z < t"
        for images, labels in cases:
            brain = _brain(images)
            z = (images[c][brain] - images[c][brain].mean()) / images[c][brain].std()
            ref = np.isin(labels, region)[brain]
            bins = np.searchsorted(edges, z)  # voxel counts per bin, then cumulative per threshold
            hit = np.bincount(bins[ref], minlength=len(edges) + 1)
            every = np.bincount(bins, minlength=len(edges) + 1)
            hit_below, every_below = np.cumsum(hit)[:-1], np.cumsum(every)[:-1]  # z < edges[k]
            above.append(2 * (ref.sum() - hit_below) / (len(z) - every_below + ref.sum()))
            below.append(2 * hit_below / (every_below + ref.sum()))
        best = max(best, float(np.mean(above, 0).max()), float(np.mean(below, 0).max()))
    return best


def test_no_single_channel_threshold_segments_a_region(cases):
    """The look-alikes at work: the best fixed threshold of the best channel stays well below a segmentation
    (measured on 24 subjects: whole tumour 0.67, tumour core 0.25, enhancing tumour 0.20, each from FLAIR;
    docs/brats.md)."""
    assert _best_threshold_dice(cases, REGIONS["whole tumor"]) < 0.8
    assert _best_threshold_dice(cases, REGIONS["tumor core"]) < 0.45
    assert _best_threshold_dice(cases, REGIONS["enhancing tumor"]) < 0.45


def test_each_look_alike_is_there(cases):
    """Outside every tumour: t1gd-bright voxels (vessels, choroid plexus), FLAIR-bright voxels (white-matter
    hyperintensities) and T2w-bright voxels (CSF), each as bright as the tumour sub-region it imitates."""
    flair, t1gd, t2 = (CHANNELS.index(c) for c in ("FLAIR", "t1gd", "T2w"))
    for images, labels in cases:
        outside = _brain(images) & ~binary_dilation(labels > 0, iterations=2)
        for channel, region in ((t1gd, (3,)), (flair, (1,)), (t2, (1,))):
            tumour = np.isin(labels, region)
            if tumour.sum() < 20:
                continue
            level = np.median(images[channel][tumour])
            assert (images[channel][outside] > level).sum() >= 10, (CHANNELS[channel], region)


def test_synth_options_that_do_not_apply_are_refused_before_writing(tmp_path):
    from nnunet_cmcl.data.writers import write_dataset
    from nnunet_cmcl.errors import CMCLInputError

    with pytest.raises(CMCLInputError, match="apply to phantom only; brats has FLAIR, T1w, t1gd, T2w"):
        write_dataset("brats", str(tmp_path), 14, num_cases=2, modalities=["T1"])
    with pytest.raises(CMCLInputError, match="each >= 24"):
        write_dataset("brats", str(tmp_path), 14, num_cases=2, shape=(16, 32, 32))
    assert os.listdir(tmp_path) == []

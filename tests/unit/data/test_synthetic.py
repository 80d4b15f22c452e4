"""Tests for nnunet_cmcl.data.synthetic: file layout, geometry, reproducibility and nnU-Net's own integrity check."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_cmcl.data.synthetic import write_phantom_dataset


SHAPE = (24, 24, 24)
SPACING = (2.0, 1.0, 0.5)  # anisotropic (z, y, x) so a swapped axis order would be caught


def _read(path: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_phantom_dataset(str(tmp_path_factory.mktemp("raw")), 7, num_cases=4, shape=SHAPE,
                                 spacing=SPACING, seed=3)


def test_layout_and_dataset_json(dataset):
    assert os.path.basename(dataset) == "Dataset007_CMCLPhantom"
    # no leftover temp folder next to the dataset
    assert os.listdir(os.path.dirname(dataset)) == ["Dataset007_CMCLPhantom"]
    images = sorted(os.listdir(os.path.join(dataset, "imagesTr")))
    assert images == [f"CMCLPhantom_{i:03d}_{c:04d}.nii.gz" for i in range(4) for c in range(2)]
    labels = sorted(os.listdir(os.path.join(dataset, "labelsTr")))
    assert labels == [f"CMCLPhantom_{i:03d}.nii.gz" for i in range(4)]
    with open(os.path.join(dataset, "dataset.json")) as f:
        dj = json.load(f)
    assert dj["channel_names"] == {"0": "T1", "1": "T2"}
    assert dj["labels"] == {"background": 0, "structure_a": 1, "structure_b": 2}
    assert dj["numTraining"] == 4 and dj["file_ending"] == ".nii.gz"


def test_geometry_dtypes_and_labels(dataset):
    for i in range(4):
        lab = sitk.ReadImage(os.path.join(dataset, "labelsTr", f"CMCLPhantom_{i:03d}.nii.gz"))
        assert lab.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayFromImage(lab)).tolist()) == {0, 1, 2}
        for c in range(2):
            img = sitk.ReadImage(os.path.join(dataset, "imagesTr", f"CMCLPhantom_{i:03d}_{c:04d}.nii.gz"))
            assert img.GetPixelID() == sitk.sitkFloat32
            assert img.GetSize() == lab.GetSize() == SHAPE[::-1]
            assert img.GetSpacing() == lab.GetSpacing() == SPACING[::-1]  # SimpleITK is (x, y, z)
            assert img.GetOrigin() == lab.GetOrigin() == (0.0, 0.0, 0.0)
            assert img.GetDirection() == lab.GetDirection() == (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
            assert sitk.GetArrayFromImage(img).shape == SHAPE


def test_cross_modal_contrast(dataset):
    """structure_a (1) stands out in channel 0 only, structure_b (2) in channel 1 only."""
    lab = _read(os.path.join(dataset, "labelsTr", "CMCLPhantom_000.nii.gz"))
    ch = [_read(os.path.join(dataset, "imagesTr", f"CMCLPhantom_000_{c:04d}.nii.gz")) for c in range(2)]
    body = (lab == 0) & (ch[0] > 0.5)  # body voxels outside structures (background is ~0.05)
    rel = [[ch[c][lab == k].mean() / ch[c][body].mean() - 1 for k in (1, 2)] for c in range(2)]
    assert rel[0][0] > 0.4 and abs(rel[0][1]) < 0.1
    assert rel[1][1] < -0.4 and abs(rel[1][0]) < 0.1


def test_reproducible(tmp_path, dataset):
    same = write_phantom_dataset(str(tmp_path), 7, num_cases=4, shape=SHAPE, spacing=SPACING, seed=3)
    other = write_phantom_dataset(str(tmp_path), 8, num_cases=4, shape=SHAPE, spacing=SPACING, seed=4)
    for sub, f in [("imagesTr", "CMCLPhantom_001_0001.nii.gz"), ("labelsTr", "CMCLPhantom_001.nii.gz")]:
        a, b, c = (_read(os.path.join(d, sub, f)) for d in (dataset, same, other))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_without_labels_and_three_modalities(tmp_path):
    d = write_phantom_dataset(str(tmp_path), 9, name="NoLab", num_cases=2, modalities=("T1", "T2", "FLAIR"),
                              shape=(16, 20, 24), with_labels=False)
    assert not os.path.exists(os.path.join(d, "labelsTr"))
    assert len(os.listdir(os.path.join(d, "imagesTr"))) == 6
    assert _read(os.path.join(d, "imagesTr", "NoLab_001_0002.nii.gz")).shape == (16, 20, 24)


@pytest.mark.parametrize("kwargs", [dict(dataset_id=0), dict(dataset_id=1000), dict(num_cases=1),
                                    dict(modalities=())])
def test_bad_inputs(tmp_path, kwargs):
    kwargs = {"dataset_id": 5, **kwargs}
    with pytest.raises(ValueError):
        write_phantom_dataset(str(tmp_path), shape=(16, 16, 16), **kwargs)
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_existing_target_refused(tmp_path):
    write_phantom_dataset(str(tmp_path), 5, num_cases=2, shape=(16, 16, 16))
    with pytest.raises(ValueError, match="already exists"):
        write_phantom_dataset(str(tmp_path), 5, num_cases=2, shape=(16, 16, 16))
    with pytest.raises(ValueError, match="already used"):  # same id, other name: nnU-Net could not resolve it
        write_phantom_dataset(str(tmp_path), 5, name="Other", num_cases=2, shape=(16, 16, 16))

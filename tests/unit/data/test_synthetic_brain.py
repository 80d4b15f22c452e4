"""Tests for nnunet_cmcl.data.synthetic.write_brain_dataset: layout, geometry, tissue contrasts, reproducibility and
nnU-Net's own integrity check. Needs nilearn (its packaged MNI152 templates; nothing is downloaded)."""
import json
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nilearn")
from nnunet_cmcl.data.synthetic import _mni152, write_brain_dataset  # noqa: E402

SHAPE = (32, 40, 32)
N = 3


def _read(path: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def _case(dataset: str, i: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(channels [T1, T2, FLAIR], label) of case i."""
    name = os.path.basename(dataset).split("_", 1)[1]
    chans = [_read(os.path.join(dataset, "imagesTr", f"{name}_{i:03d}_{c:04d}.nii.gz")) for c in range(3)]
    return chans, _read(os.path.join(dataset, "labelsTr", f"{name}_{i:03d}.nii.gz"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_brain_dataset(str(tmp_path_factory.mktemp("raw")), 11, num_cases=N, shape=SHAPE, seed=5)


def test_layout_and_dataset_json(dataset):
    assert os.path.basename(dataset) == "Dataset011_CMCLBrain"
    assert os.listdir(os.path.dirname(dataset)) == ["Dataset011_CMCLBrain"]  # no leftover temp folder
    images = sorted(os.listdir(os.path.join(dataset, "imagesTr")))
    assert images == [f"CMCLBrain_{i:03d}_{c:04d}.nii.gz" for i in range(N) for c in range(3)]
    labels = sorted(os.listdir(os.path.join(dataset, "labelsTr")))
    assert labels == [f"CMCLBrain_{i:03d}.nii.gz" for i in range(N)]
    with open(os.path.join(dataset, "dataset.json")) as f:
        dj = json.load(f)
    assert dj["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
    assert dj["labels"] == {"background": 0, "CSF": 1, "grey_matter": 2, "white_matter": 3}
    assert dj["numTraining"] == N and dj["file_ending"] == ".nii.gz"


def test_geometry_and_labels(dataset):
    spacing = _mni152(SHAPE)[1]
    assert all(2.0 < s < 8.0 for s in spacing)  # the ~2 mm template zoomed down to SHAPE
    for i in range(N):
        lab = sitk.ReadImage(os.path.join(dataset, "labelsTr", f"CMCLBrain_{i:03d}.nii.gz"))
        assert lab.GetPixelID() == sitk.sitkUInt8
        arr = sitk.GetArrayFromImage(lab)
        assert set(np.unique(arr).tolist()) == {0, 1, 2, 3}  # every tissue present, nothing else
        # the whole brain stays in view: no tissue on any face of the volume
        assert not any(np.take(arr, k, axis=a).any() for a in range(3) for k in (0, -1))
        for c in range(3):
            img = sitk.ReadImage(os.path.join(dataset, "imagesTr", f"CMCLBrain_{i:03d}_{c:04d}.nii.gz"))
            assert img.GetPixelID() == sitk.sitkFloat32
            assert img.GetSize() == lab.GetSize() == SHAPE[::-1]
            assert img.GetSpacing() == pytest.approx(lab.GetSpacing()) and lab.GetSpacing() == pytest.approx(
                spacing[::-1])  # SimpleITK is (x, y, z)
            assert img.GetOrigin() == lab.GetOrigin() and img.GetDirection() == lab.GetDirection()


def test_tissue_contrasts(dataset):
    """Real T1 (WM > GM > CSF, correlated with the template), T2-like CSF bright, FLAIR-like CSF dark.

    FLAIR's GM > WM holds for pure tissue but not reliably for label means: at ~4 mm, grey-matter voxels are
    partial-volumed with dark CSF, and lesions brighten white matter, so it is not asserted."""
    template_t1 = _mni152(SHAPE)[0][0]
    for i in range(N):
        (t1, t2, flair), lab = _case(dataset, i)
        m = [[x[lab == k].mean() for k in range(4)] for x in (t1, t2, flair)]
        assert m[0][3] > m[0][2] > m[0][1]  # T1: white matter brighter than grey matter, CSF darkest
        assert m[1][1] > m[1][3]            # T2-like: CSF brighter than white matter
        assert m[2][1] < min(m[2][2], m[2][3])  # FLAIR-like: CSF (suppressed fluid) darker than WM and GM
        # the deformation is small, so the subject's T1 still resembles the undeformed template
        assert np.corrcoef(t1.ravel(), template_t1.ravel())[0, 1] > 0.6


def test_reproducible(tmp_path, dataset):
    same = write_brain_dataset(str(tmp_path), 11, num_cases=N, shape=SHAPE, seed=5)
    other = write_brain_dataset(str(tmp_path), 12, num_cases=N, shape=SHAPE, seed=6)
    for sub, f in [("imagesTr", "CMCLBrain_001_0002.nii.gz"), ("labelsTr", "CMCLBrain_001.nii.gz")]:
        a, b, c = (_read(os.path.join(d, sub, f)) for d in (dataset, same, other))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("kwargs", [dict(dataset_id=0), dict(num_cases=1), dict(shape=(32, 32)),
                                    dict(shape=(8, 32, 32))])
def test_bad_inputs(tmp_path, kwargs):
    kwargs = {"dataset_id": 5, "shape": SHAPE, **kwargs}
    with pytest.raises(ValueError):
        write_brain_dataset(str(tmp_path), **kwargs)
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_missing_nilearn_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes `from nilearn import ...` raise ImportError
    with pytest.raises(ImportError, match="pip install nilearn"):
        write_brain_dataset(str(tmp_path), 5, num_cases=2, shape=(16, 17, 18))  # uncached shape
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("Dataset", "."))]

"""Small synthetic multi-modal phantom datasets in nnUNet_raw format, for tests and demos.

Axis convention: numpy arrays are indexed (z, y, x); ``shape`` and ``spacing`` are given in that same
numpy order. SimpleITK wants spacing in (x, y, z) order, so it is reversed exactly once, in ``_write``.
"""
import os
import shutil
import tempfile

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

# Tissue indices used by the intensity tables: 0 background, 1 body, 2 structure_a (label 1), 3 structure_b (label 2).
# structure_a is bright only in channel 0 and structure_b dark only in channel 1; in the other channel each is
# within a few percent of body, i.e. buried in noise and bias, so a model has to combine modalities.
_TABLES = {0: (0.05, 1.0, 1.8, 1.03),   # e.g. "T1": a visible, b nearly invisible
           1: (0.02, 0.8, 0.78, 0.3)}   # e.g. "T2": b visible, a nearly invisible
_TABLE_EXTRA = (0.1, 1.0, 1.4, 0.6)     # channels >= 2: both structures moderately visible


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """grid: (3, Z, Y, X) normalised coords in [-1, 1]; returns a bool mask (Z, Y, X)."""
    local = np.einsum("ij,j...->i...", rot.T, grid - centre[:, None, None, None])  # rotate into ellipsoid frame
    return (((local / radii[:, None, None, None]) ** 2).sum(0)) <= 1.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _make_case(rng: np.random.Generator, shape: tuple[int, int, int], n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images float32 (C, Z, Y, X), labels uint8 (Z, Y, X) with values {0, 1, 2})."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    body = _ellipsoid(grid, rng.uniform(-0.05, 0.05, 3), rng.uniform(0.7, 0.9, 3), _random_rotation(rng))
    # Resample until both labels survive: structures may overlap or be painted over by a later one.
    for _ in range(100):
        labels = np.zeros(shape, np.uint8)
        for k in range(int(rng.integers(2, 4))):  # 2-3 structures; the third reuses label 1
            centre = rng.uniform(-0.35, 0.35, 3)   # well inside the body (radii >= 0.7)
            mask = _ellipsoid(grid, centre, rng.uniform(0.2, 0.35, 3), _random_rotation(rng)) & body
            labels[mask] = k % 2 + 1
        if {1, 2} <= set(np.unique(labels).tolist()):
            break
    else:
        raise RuntimeError("could not place both structures; use a larger shape")
    tissue = np.where(labels > 0, labels.astype(np.int64) + 1, body.astype(np.int64))
    # Texture shared by all channels: fine anatomy that is common to modalities beyond the label map.
    texture = gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    texture = 1.0 + 0.08 * body * texture / (texture.std() + 1e-8)
    # Low-order polynomial monomials (up to degree 2) for the per-channel bias fields.
    z, y, x = grid
    monomials = np.stack([z, y, x, z * y, z * x, y * x, z * z, y * y, x * x])
    images = np.empty((n_channels, *shape), np.float32)
    for c in range(n_channels):
        table = np.asarray(_TABLES.get(c, _TABLE_EXTRA))
        poly = np.tensordot(rng.standard_normal(9), monomials, axes=1)
        bias = 1.0 + 0.2 * poly / (np.abs(poly).max() + 1e-8)  # smooth, within +-20 %
        images[c] = table[tissue] * texture * bias + rng.normal(0.0, 0.03, shape)
    return images, labels


def _write(arr: np.ndarray, path: str, spacing: tuple[float, float, float]) -> None:
    """arr: (Z, Y, X); spacing in (z, y, x) order, reversed here to SimpleITK's (x, y, z)."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    img.SetOrigin((0.0, 0.0, 0.0))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, path, useCompression=True)


def write_phantom_dataset(raw_root: str, dataset_id: int, name: str = "CMCLPhantom", num_cases: int = 8,
                          modalities: tuple[str, ...] = ("T1", "T2"), shape: tuple[int, int, int] = (40, 40, 40),
                          spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0,
                          with_labels: bool = True) -> str:
    """Writes Dataset{id:03d}_{name} under raw_root and returns its folder.

    ``shape`` and ``spacing`` are in numpy (z, y, x) order. Case i uses rng seeded by (seed, i), so output is
    reproducible. Images: imagesTr/{name}_{i:03d}_{c:04d}.nii.gz (float32), labels: labelsTr/{name}_{i:03d}.nii.gz
    (uint8, values {0, 1, 2}). Channel names other than nnU-Net's special ones (e.g. "CT") get z-score normalisation.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}; pick another id")
    if num_cases < 2:
        raise ValueError(f"num_cases must be >= 2, got {num_cases}; nnU-Net needs at least 2 cases")
    if len(modalities) < 1:
        raise ValueError("modalities must name at least one channel, e.g. ('T1', 'T2')")
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have 3 entries (z, y, x), got {shape} and {spacing}")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    target = os.path.join(raw_root, folder_name)
    if os.path.exists(target):
        raise ValueError(f"{target} already exists; delete it or choose another dataset_id/name")
    os.makedirs(raw_root, exist_ok=True)
    # nnU-Net resolves datasets by id, so a second folder with the same id but another name would be ambiguous.
    clashes = [f for f in os.listdir(raw_root) if f.startswith(f"Dataset{dataset_id:03d}_")]
    if clashes:
        raise ValueError(f"dataset id {dataset_id} is already used by {clashes[0]} in {raw_root}; choose another id")

    # Build in a hidden temp folder on the same filesystem, then rename: readers never see a half-written dataset.
    tmp = tempfile.mkdtemp(prefix=f".{folder_name}.", dir=raw_root)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the final dataset folder should be a normal one
        os.makedirs(os.path.join(tmp, "imagesTr"))
        if with_labels:
            os.makedirs(os.path.join(tmp, "labelsTr"))
        for i in range(num_cases):
            images, labels = _make_case(np.random.default_rng([seed, i]), tuple(shape), len(modalities))
            for c, img in enumerate(images):
                _write(img, os.path.join(tmp, "imagesTr", f"{name}_{i:03d}_{c:04d}.nii.gz"), spacing)
            if with_labels:
                _write(labels, os.path.join(tmp, "labelsTr", f"{name}_{i:03d}.nii.gz"), spacing)
        generate_dataset_json(tmp, channel_names={str(c): m for c, m in enumerate(modalities)},
                              labels={"background": 0, "structure_a": 1, "structure_b": 2},
                              num_training_cases=num_cases, file_ending=".nii.gz", dataset_name=folder_name,
                              description="synthetic multi-modal ellipsoid phantom (nnunet_cmcl.synthetic)")
        os.rename(tmp, target)  # atomic on one filesystem; fails rather than merging if target appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

"""Small synthetic multi-modal datasets in nnUNet_raw format, for tests and demos.

``write_phantom_dataset`` draws random ellipsoid phantoms. ``write_brain_dataset`` starts from real anatomy: the
MNI152 (ICBM 2009a) T1 template with its grey- and white-matter probability maps and brain mask, as shipped inside
the nilearn package (no download). Everything else is simulated: each subject is a random smooth deformation plus a
small affine of that one template; the T2-like and FLAIR-like contrasts are painted from the deformed tissue maps;
FLAIR lesions, bias fields and noise are random. It is a realistic-looking test bed, not real patient data.

Axis convention: numpy arrays are indexed (z, y, x); ``shape`` and ``spacing`` are given in that same
numpy order. SimpleITK wants spacing in (x, y, z) order, so it is reversed exactly once, in ``_write``.
"""
import functools
import os
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter, map_coordinates, zoom

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_cmcl.atomic import folder_written_atomically
from nnunet_cmcl.errors import CMCLInputError

# Tissue indices used by the intensity tables: 0 background, 1 body, 2 structure_a (label 1), 3 structure_b (label 2).
# structure_a is bright only in channel 0 and structure_b dark only in channel 1; in the other channel each is
# within a few percent of body, i.e. buried in noise and bias, so a model has to combine modalities.
_TABLES = {0: (0.05, 1.0, 1.8, 1.03),   # e.g. "T1": a visible, b nearly invisible
           1: (0.02, 0.8, 0.78, 0.3)}   # e.g. "T2": b visible, a nearly invisible
_TABLE_EXTRA = (0.1, 1.0, 1.4, 0.6)     # channels >= 2: both structures moderately visible
BRAIN_CHANNELS = ("T1", "T2", "FLAIR")  # the brain dataset's channels, in order


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """grid: (3, Z, Y, X) normalised coords in [-1, 1]; returns a bool mask (Z, Y, X)."""
    local = np.einsum("ij,j...->i...", rot.T, grid - centre[:, None, None, None])  # rotate into ellipsoid frame
    return (((local / radii[:, None, None, None]) ** 2).sum(0)) <= 1.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _bias_field(rng: np.random.Generator, grid: np.ndarray, amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias 1 +- amplitude: random polynomial of degree <= 2 in grid (3, Z, Y, X) in [-1, 1]."""
    z, y, x = grid
    monomials = np.stack([z, y, x, z * y, z * x, y * x, z * z, y * y, x * x])
    poly = np.tensordot(rng.standard_normal(9), monomials, axes=1)
    return 1.0 + amplitude * poly / (np.abs(poly).max() + 1e-8)


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
    images = np.empty((n_channels, *shape), np.float32)
    for c in range(n_channels):
        table = np.asarray(_TABLES.get(c, _TABLE_EXTRA))
        bias = _bias_field(rng, grid, 0.2)  # smooth, within +-20 %
        images[c] = table[tissue] * texture * bias + rng.normal(0.0, 0.03, shape)
    return images, labels


def _write(arr: np.ndarray, path: str, spacing: tuple[float, float, float]) -> None:
    """arr: (Z, Y, X); spacing in (z, y, x) order, reversed here to SimpleITK's (x, y, z)."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    img.SetOrigin((0.0, 0.0, 0.0))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, path, useCompression=True)


def _write_case(folder: str, name: str, i: int, images: np.ndarray, labels: np.ndarray | None,
                spacing: tuple[float, float, float]) -> None:
    """nnU-Net raw layout: imagesTr/{name}_{i:03d}_{c:04d}.nii.gz per channel, labelsTr/{name}_{i:03d}.nii.gz."""
    for c, img in enumerate(images):
        _write(img, os.path.join(folder, "imagesTr", f"{name}_{i:03d}_{c:04d}.nii.gz"), spacing)
    if labels is not None:
        _write(labels, os.path.join(folder, "labelsTr", f"{name}_{i:03d}.nii.gz"), spacing)


def write_cases(folder: str, name: str, num_cases: int, seed: int, make_case: Callable, with_labels: bool,
                spacing: tuple[float, float, float]) -> None:
    """Case i = ``make_case(rng seeded by (seed, i))`` -> (images, labels), written in nnU-Net's raw layout."""
    for i in range(num_cases):
        images, labels = make_case(np.random.default_rng([seed, i]))
        _write_case(folder, name, i, images, labels if with_labels else None, spacing)


def _check_id_and_cases(dataset_id: int, num_cases: int) -> None:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}; pick another id")
    if num_cases < 2:
        raise ValueError(f"num_cases must be >= 2, got {num_cases}; nnU-Net needs at least 2 cases")


def _claim_target(raw_root: str, dataset_id: int, name: str) -> tuple[str, str]:
    """Returns (folder name, target path) after checking that neither the folder nor the id is taken."""
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    target = os.path.join(raw_root, folder_name)
    if os.path.exists(target):
        raise ValueError(f"{target} already exists; delete it or choose another dataset_id/name")
    os.makedirs(raw_root, exist_ok=True)
    # nnU-Net resolves datasets by id, so a second folder with the same id but another name would be ambiguous.
    clashes = [f for f in os.listdir(raw_root) if f.startswith(f"Dataset{dataset_id:03d}_")]
    if clashes:
        raise ValueError(f"dataset id {dataset_id} is already used by {clashes[0]} in {raw_root}; choose another id")
    return folder_name, target


def build_dataset_atomically(target: str, with_labels: bool, fill: Callable[[str], None]) -> str:
    """Creates imagesTr (and labelsTr) in a temp folder, lets ``fill`` write into it, then renames it to target."""
    with folder_written_atomically(target, replace_existing=False) as tmp:
        os.makedirs(os.path.join(tmp, "imagesTr"))
        if with_labels:
            os.makedirs(os.path.join(tmp, "labelsTr"))
        fill(tmp)
    return target


def write_phantom_dataset(raw_root: str, dataset_id: int, name: str = "CMCLPhantom", num_cases: int = 8,
                          modalities: tuple[str, ...] = ("T1", "T2"), shape: tuple[int, int, int] = (40, 40, 40),
                          spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0,
                          with_labels: bool = True) -> str:
    """Writes Dataset{id:03d}_{name} under raw_root and returns its folder.

    ``shape`` and ``spacing`` are in numpy (z, y, x) order. Case i uses rng seeded by (seed, i), so output is
    reproducible. Images: imagesTr/{name}_{i:03d}_{c:04d}.nii.gz (float32), labels: labelsTr/{name}_{i:03d}.nii.gz
    (uint8, values {0, 1, 2}). Channel names other than nnU-Net's special ones (e.g. "CT") get z-score normalisation.
    """
    _check_id_and_cases(dataset_id, num_cases)
    if len(modalities) < 1:
        raise ValueError("modalities must name at least one channel, e.g. ('T1', 'T2')")
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have 3 entries (z, y, x), got {shape} and {spacing}")
    folder_name, target = _claim_target(raw_root, dataset_id, name)

    def fill(tmp: str) -> None:
        write_cases(tmp, name, num_cases, seed, lambda rng: _make_case(rng, tuple(shape), len(modalities)),
                    with_labels, spacing)
        generate_dataset_json(tmp, channel_names={str(c): m for c, m in enumerate(modalities)},
                              labels={"background": 0, "structure_a": 1, "structure_b": 2},
                              num_training_cases=num_cases, file_ending=".nii.gz", dataset_name=folder_name,
                              description="synthetic multi-modal ellipsoid phantom (nnunet_cmcl.data.synthetic)")

    return build_dataset_atomically(target, with_labels, fill)


@functools.lru_cache(maxsize=4)
def _mni152(shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """nilearn's packaged MNI152 [T1, GM, WM, brain mask] resampled to ``shape``: ((4, Z, Y, X) float32, spacing).

    Cached (read-only) so that a dataset, or a test run, loads and resamples the templates only once.
    """
    try:
        from nilearn import datasets
    except ImportError as e:
        raise ImportError("write_brain_dataset needs nilearn's MNI152 templates: pip install nilearn") from e
    # These loaders read files shipped inside the nilearn wheel (nilearn/datasets/data), they never download.
    loaders = (datasets.load_mni152_template, datasets.load_mni152_gm_template,
               datasets.load_mni152_wm_template, datasets.load_mni152_brain_mask)
    # nibabel arrays are (x, y, z) at 2 mm; transpose to this module's numpy (z, y, x) order
    vols = np.stack([np.asarray(load(resolution=2).dataobj, np.float32).T for load in loaders])
    # Crop to the brain's bounding box plus 10 % per side (zero-padded where that leaves the template, which cuts
    # the brainstem at its lower edge): deformed subjects, up to 8 % larger, then stay in view.
    idx = np.argwhere(vols[3] > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    margin = np.ceil(0.1 * (hi - lo)).astype(int)
    vols = np.pad(vols, [(0, 0)] + [(int(m), int(m)) for m in margin])
    vols = vols[:, lo[0]:hi[0] + 2 * margin[0], lo[1]:hi[1] + 2 * margin[1], lo[2]:hi[2] + 2 * margin[2]]
    factors = np.array(shape) / np.array(vols.shape[1:])
    # Mild Gaussian pre-filter so the ~2x downsampling does not alias the thin cortical ribbon.
    sigma = [0.0] + [max(0.5 / f - 0.5, 0.0) for f in factors]
    out = zoom(gaussian_filter(vols, sigma), [1.0, *factors], order=1)
    # zoom maps first to first and last to last voxel, so the new spacing is 2 mm * (n_in - 1) / (n_out - 1).
    spacing = tuple(round(2.0 * (n - 1) / (s - 1), 4) for n, s in zip(vols.shape[1:], shape))
    out.setflags(write=False)
    return out, spacing


def subject_coordinates(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One subject's deformation of the template: (grid (3, Z, Y, X) voxel indices, template coordinates sampled
    at each voxel (3, Z, Y, X)): a small random affine about the centre plus a smooth displacement."""
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape, np.float64) - 1) / 2
    # Subject = small random affine (rotation +-8 deg about each axis, scale +-8 %) about the centre ...
    affine = np.diag(rng.uniform(0.92, 1.08, 3))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        t = np.deg2rad(rng.uniform(-8, 8))
        rot = np.eye(3)
        rot[[a, a, b, b], [a, b, a, b]] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
        affine = rot @ affine
    # ... plus a smooth random displacement field of a few voxels (local shape differences).
    disp = np.stack([gaussian_filter(rng.standard_normal(shape), sigma=4.0) for _ in range(3)])
    disp *= rng.uniform(1.5, 3.0) / (np.abs(disp).max() + 1e-8)
    coords = np.einsum("ij,j...->i...", affine, grid - centre[:, None, None, None]) \
        + centre[:, None, None, None] + disp
    return grid, coords


def _brain_case(rng: np.random.Generator, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One simulated subject: (images float32 (3, Z, Y, X) T1/T2/FLAIR, labels uint8 (Z, Y, X) in {0..3})."""
    shape = template.shape[1:]
    grid, coords = subject_coordinates(rng, shape)
    # The same sampling coordinates for every map keep T1, tissue maps and labels voxel-aligned.
    t1, gm, wm, mask = (map_coordinates(v, coords, order=1, mode="constant", cval=0.0) for v in template)
    gm, wm = gm * mask, wm * mask  # the probability maps leak a little outside the brain
    csf = np.clip(mask - gm - wm, 0.0, None)
    labels = np.where(mask > 0.5, np.argmax(np.stack([csf, gm, wm]), 0) + 1, 0).astype(np.uint8)

    # White-matter lesions in some cases: bright in FLAIR, a faint change in T1/T2; not a label.
    lesion = np.zeros(shape)
    wm_voxels = np.argwhere(labels == 3)
    if rng.random() < 0.6 and len(wm_voxels):
        for c in wm_voxels[rng.choice(len(wm_voxels), int(rng.integers(1, 5)))]:
            blob = _ellipsoid(grid, c.astype(np.float64), rng.uniform(1.0, 2.5, 3), _random_rotation(rng))
            lesion[blob & (labels == 3)] = 1.0
        lesion = np.clip(gaussian_filter(lesion, 0.6) * 1.5, 0.0, 1.0)  # soft, partial-volume edges

    norm_grid = 2 * grid / (np.array(shape)[:, None, None, None] - 1) - 1  # [-1, 1] for the bias polynomials
    t1 = rng.uniform(0.7, 1.3) * t1 * (1 - 0.05 * lesion)  # real T1 intensities, arbitrary global scale
    t2 = (1.0 * csf + 0.6 * gm + 0.35 * wm) * (1 + 0.08 * lesion)
    flair = (0.15 * csf + 0.7 * gm + 0.5 * wm) * (1 - lesion) + 1.1 * lesion
    images = np.stack([img * _bias_field(rng, norm_grid, 0.15) + rng.normal(0.0, 0.02, shape)
                       for img in (t1, t2, flair)]).astype(np.float32)
    return images, labels


def write_brain_dataset(raw_root: str, dataset_id: int, name: str = "CMCLBrain", num_cases: int = 12,
                        shape: tuple[int, int, int] = (48, 56, 48), seed: int = 0, with_labels: bool = True) -> str:
    """Writes Dataset{id:03d}_{name} of simulated brain MRI under raw_root and returns its folder.

    Real MNI152 anatomy (see the module docstring), randomly deformed per subject, channels "T1", "T2" (T2-like)
    and "FLAIR" (FLAIR-like, with white-matter lesions in some cases). Labels (uint8): 0 background, 1 CSF,
    2 grey matter, 3 white matter, by argmax of the deformed tissue maps inside the brain mask. ``shape`` is in
    numpy (z, y, x) order; the brain's bounding box (+10 % margin) is zoomed to it, and the spacing (mm, z, y, x)
    follows from that zoom: about (3.96, 3.89, 3.74) mm for the default (48, 56, 48). Case i uses rng seeded by
    (seed, i), so output is reproducible. File layout, origin 0 and identity direction as in
    ``write_phantom_dataset`` (so viewers show x and y mirrored relative to MNI/RAS; nnU-Net does not care).
    Needs nilearn.
    """
    _check_id_and_cases(dataset_id, num_cases)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must have 3 entries (z, y, x), each >= 16, got {shape}")
    folder_name, target = _claim_target(raw_root, dataset_id, name)
    template, spacing = _mni152(tuple(int(s) for s in shape))

    def fill(tmp: str) -> None:
        write_cases(tmp, name, num_cases, seed, lambda rng: _brain_case(rng, template), with_labels, spacing)
        generate_dataset_json(tmp, channel_names={str(c): m for c, m in enumerate(BRAIN_CHANNELS)},
                              labels={"background": 0, "CSF": 1, "grey_matter": 2, "white_matter": 3},
                              num_training_cases=num_cases, file_ending=".nii.gz", dataset_name=folder_name,
                              description="simulated multi-modal brain MRI from nilearn's MNI152 templates "
                                          "(nnunet_cmcl.data.synthetic)")

    return build_dataset_atomically(target, with_labels, fill)

"""A BraTS-like built-in dataset: simulated glioma MRI in four sequences, on real anatomy (`nnunet-cmcl synth brats`).

Anatomy is nilearn's shipped MNI152 template (as in ``synthetic.write_brain_dataset``), deformed per subject. Into
it go 1-3 tumours of random location, size and irregular shape, each pushing the anatomy aside (mass effect) and
made of nested sub-regions: peritumoral edema around a core, the core an enhancing rim around a necrotic centre
(some tumours solid, some not enhancing). The four channels carry MSD Task01's names and order (FLAIR, T1w, t1gd,
T2w); the labels are nnU-Net's BraTS conversion (1 edema, 2 non-enhancing/necrotic core, 3 enhancing tumour),
trained as nnU-Net trains BraTS: on the regions whole tumour (1, 2, 3), tumour core (2, 3) and enhancing tumour
(3,), with ``regions_class_order`` in dataset.json.

No single channel's threshold segments a region, because each signature has a look-alike in that channel:

- edema is bright in FLAIR and T2w; CSF is as bright in T2w (dark in FLAIR), and small white-matter
  hyperintensities, which are not tumour, are as bright in FLAIR (and brighter in T2w than white matter);
- the enhancing rim is bright in t1gd only; vessels and the choroid plexus enhance in t1gd too;
- necrosis is dark in T1w and t1gd, as CSF is; it is bright in T2w, as CSF is; only FLAIR tells them apart.

Subjects differ as scanners do: per-channel tissue contrasts (8 % jitter and a gamma), bias fields, noise level,
and resolution (a blur, stronger along one random axis, like thick slices). It is a test bed with the structure of
the task, not patient data. Axis order and file layout as in ``synthetic``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter, map_coordinates

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_cmcl.data.synthetic import (_bias_field, _check_id_and_cases, _claim_target, _ellipsoid, _mni152,
                                        _random_rotation, build_dataset_atomically, subject_coordinates, write_cases)

CHANNELS = ("FLAIR", "T1w", "t1gd", "T2w")  # MSD Task01's names and order
LABELS = {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
REGIONS_CLASS_ORDER = (1, 2, 3)
EDEMA, NECROSIS, ENHANCING = 1, 2, 3
DEFAULT_SHAPE = (48, 56, 48)  # about 3.9 mm: the brain's box zoomed as in write_brain_dataset

# Intensity of each component per channel (columns FLAIR, T1w, t1gd, T2w), before the subject's jitter, gamma,
# bias and noise. Rows: CSF, grey matter, white matter, edema, necrosis, enhancing tumour.
_TABLE = np.array([[0.15, 0.25, 0.25, 1.00],
                   [0.70, 0.60, 0.60, 0.60],
                   [0.50, 0.85, 0.85, 0.35],
                   [0.95, 0.55, 0.57, 0.88],
                   [0.45, 0.25, 0.28, 1.05],
                   [0.85, 0.55, 1.45, 0.75]])
# Look-alikes, as additive changes per channel: enhancing vessels and choroid plexus (t1gd), white-matter
# hyperintensities (FLAIR as bright as edema, T2w brighter, T1w a little darker)
_VESSEL = np.array([0.0, 0.0, 0.65, 0.0])
_CHOROID = np.array([0.1, 0.1, 0.85, -0.2])
_WMH = np.array([0.55, -0.12, -0.12, 0.40])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smooth Gaussian noise of unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _shape_distance(rng: np.random.Generator, grid: np.ndarray, centre: np.ndarray, radius: float,
                    roughness: float) -> np.ndarray:
    """An irregular blob's normalised distance (< 1 inside): an ellipsoid of mean radius ``radius`` voxels,
    randomly oriented, with a smooth random perturbation of its surface."""
    rotation = _random_rotation(rng)
    axes = radius * rng.uniform(0.75, 1.3, 3)
    local = np.einsum("ij,j...->i...", rotation.T, grid - centre[:, None, None, None])
    distance = np.sqrt(((local / axes[:, None, None, None]) ** 2).sum(0))
    return distance + roughness * _smooth_noise(rng, grid.shape[1:], max(1.5, radius / 3))


def _tumour(rng: np.random.Generator, grid: np.ndarray, centre: np.ndarray, radius: float,
            first: bool) -> tuple[np.ndarray, np.ndarray]:
    """One tumour: (labels (Z, Y, X) uint8, its solid non-enhancing core (bool)). Edema around a core; the core
    an enhancing rim around necrosis, solid enhancing when too small for both. In 30 % of tumours the core is
    solid non-enhancing tumour (label 2 that looks like edema more than like necrosis): all of it in a later
    tumour, the part beyond a random plane through its centre in a subject's first, whose rest still enhances, so
    that every subject has enhancing tumour (an empty reference makes nnU-Net's Dice 0 at the first false voxel)."""
    whole = _shape_distance(rng, grid, centre, radius, rng.uniform(0.12, 0.25)) < 1
    core_radius = radius * rng.uniform(0.45, 0.8)
    core_centre = centre + rng.uniform(-0.2, 0.2, 3) * radius  # eccentric in its edema
    core_distance = _shape_distance(rng, grid, core_centre, core_radius, rng.uniform(0.08, 0.2))
    core = core_distance < 1
    whole |= binary_dilation(core, iterations=1)  # edema at least one voxel around the core
    labels = np.where(whole, EDEMA, 0).astype(np.uint8)
    solid = np.zeros_like(core)
    if rng.random() < 0.3:  # a non-enhancing core, or part of one
        normal = rng.standard_normal(3)
        side = np.einsum("i,i...->...", normal, grid - core_centre[:, None, None, None]) > 0
        solid = core & side if first else core
    rim = rng.uniform(1.2, 2.6)  # voxels
    necrosis = core & (core_distance < 1 - rim / core_radius)
    labels[core] = ENHANCING
    labels[necrosis] = NECROSIS
    labels[solid] = NECROSIS  # label 2, never lighting up in t1gd
    return labels, solid


def _mass_effect(grid: np.ndarray, centre: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """(3, Z, Y, X) displacement pushing the anatomy away from a tumour's centre, fading beyond it."""
    offset = grid - centre[:, None, None, None]
    fade = np.exp(-(offset ** 2).sum(0) / (2 * (1.5 * radius) ** 2))
    return strength * offset * fade


def _place_tumours(rng: np.random.Generator, wm: np.ndarray,
                   brain: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """(centre, radius) of 1-3 tumours, centred in white matter with the whole tumour inside the brain."""
    count = int(rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08]))
    depth = distance_transform_edt(brain)
    extent = np.ptp(np.argwhere(brain), axis=0).min()
    tumours = []
    for k in range(count):
        radius = extent * rng.uniform(0.1, 0.22) * (1.0 if k == 0 else rng.uniform(0.45, 0.8))
        candidates = np.argwhere((wm > 0.4) & (depth > 1.4 * radius + 1))
        if not len(candidates):  # a small brain at this shape: the deepest white matter
            candidates = np.argwhere(depth >= depth[wm > 0.4].max() - 1)
            radius = min(radius, max(2.5, depth.max() / 1.5))
        tumours.append((candidates[rng.integers(len(candidates))].astype(np.float64), float(radius)))
    return tumours


def _strokes(rng: np.random.Generator, shape: tuple[int, ...], inside: np.ndarray, count: int, length: int,
             sigma: float) -> np.ndarray:
    """Soft thin curves (vessels): ``count`` random walks with momentum through ``inside``, blurred, peak 1."""
    paint = np.zeros(shape)
    starts = np.argwhere(inside)
    for _ in range(count):
        point = starts[rng.integers(len(starts))].astype(np.float64)
        direction = rng.standard_normal(3)
        for _ in range(length):
            direction = direction / np.linalg.norm(direction) + 0.35 * rng.standard_normal(3)
            point = np.clip(point + direction / np.linalg.norm(direction) * 0.7, 0, np.array(shape) - 1)
            paint[tuple(np.round(point).astype(int))] = 1.0
    soft = gaussian_filter(paint, sigma)
    return np.clip(soft / (soft.max() + 1e-8) * 1.6, 0, 1) * inside


def _blobs(rng: np.random.Generator, grid: np.ndarray, inside: np.ndarray, count: int,
           radii: tuple[float, float]) -> np.ndarray:
    """Soft small ellipsoids centred at random voxels of ``inside``, kept inside it, peak 1."""
    paint = np.zeros(inside.shape)
    voxels = np.argwhere(inside)
    if not len(voxels):
        return paint
    for c in voxels[rng.choice(len(voxels), count)]:
        paint[_ellipsoid(grid, c.astype(np.float64), rng.uniform(*radii, 3), _random_rotation(rng))] = 1.0
    return np.clip(gaussian_filter(paint, 0.6) * 1.5, 0, 1) * inside


def brats_case(rng: np.random.Generator, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One simulated subject: (images float32 (4, Z, Y, X) in CHANNELS order, labels uint8 (Z, Y, X) in 0..3)."""
    shape = template.shape[1:]
    grid, coords = subject_coordinates(rng, shape)
    brain = map_coordinates(template[3], coords, order=1) > 0.5
    wm = map_coordinates(template[2], coords, order=1)
    tumours = _place_tumours(rng, wm, brain)
    # mass effect: every map is sampled at grid - displacement, which moves the anatomy away from the tumours
    push = sum(_mass_effect(grid, c, r, rng.uniform(0.15, 0.35)) for c, r in tumours)
    coords = np.stack([map_coordinates(c, grid - push, order=1, mode="nearest") for c in coords])
    gm, wm, mask = (map_coordinates(template[k], coords, order=1) for k in (1, 2, 3))
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, None)
    brain = mask > 0.5

    labels, solid = np.zeros(shape, np.uint8), np.zeros(shape, bool)
    for k, (centre, radius) in enumerate(tumours):
        one, one_solid = _tumour(rng, grid, centre, radius, k == 0)
        labels, solid = np.maximum(labels, one), solid | one_solid
    labels[~brain] = 0
    solid &= labels == NECROSIS
    # edema, necrosis, solid non-enhancing core, enhancing tumour, each with partial-volume edges
    parts = [gaussian_filter(mask.astype(np.float64), 0.5) for mask in
             (labels == EDEMA, (labels == NECROSIS) & ~solid, solid, labels == ENHANCING)]
    tumour = np.clip(sum(parts), 0, 1)
    anatomy = np.stack([csf, gm, wm]) * (1 - tumour)

    # infiltrative edema fades into normal tissue: its contrast falls from 1 at the core to `fade` at its edge
    core = np.isin(labels, (NECROSIS, ENHANCING))
    from_core = distance_transform_edt(~core) if core.any() else np.zeros(shape)
    edge = from_core[labels == EDEMA].max() if (labels == EDEMA).any() else 1.0
    fade = rng.uniform(0.25, 0.6)
    # how conspicuous this subject's edema is: from subtle (half its contrast to white matter) to full
    edema_contrast = rng.uniform(0.5, 1.0) * (1 - (1 - fade) * np.clip(from_core / max(edge, 1.0), 0, 1))

    outside_tumour = labels == 0
    depth = distance_transform_edt(brain)
    vessels = _strokes(rng, shape, brain & outside_tumour, int(rng.integers(6, 15)), int(rng.integers(15, 45)), 0.6)
    # the dura and cortical veins enhance along the brain's surface, patchily
    vessels = np.maximum(vessels, (depth > 0) * (depth < 1.8) * np.clip(_smooth_noise(rng, shape, 1.5), 0, 1))
    choroid = _blobs(rng, grid, (depth > 3) & (csf > 0.6) & outside_tumour, int(rng.integers(1, 4)), (0.8, 1.6))
    # white-matter hyperintensities, scattered and capping the ventricles: as bright as edema in FLAIR
    ventricle_edge = (gaussian_filter(((depth > 3) & (csf > 0.6)).astype(float), 1.2) > 0.15) & (wm > 0.3)
    burden = rng.random()
    wmh = np.maximum(_blobs(rng, grid, (wm > 0.5) & outside_tumour, int(2 + 20 * burden), (0.7, 3.0)),
                     _blobs(rng, grid, ventricle_edge & outside_tumour, int(1 + 8 * burden), (1.0, 2.5)))
    heterogeneity = 1 + 0.08 * _smooth_noise(rng, shape, 1.0)  # tumours are not uniform inside
    # this subject's tumour phenotype: necrosis from fluid to proteinaceous, solid core near edema, an enhancement
    # of its own strength that is patchy along the rim
    necrosis_row = np.array([rng.uniform(0.3, 0.95), t1 := rng.uniform(0.2, 0.45), t1 + 0.03, rng.uniform(0.8, 1.1)])
    solid_row = np.array([rng.uniform(0.8, 1.0), t1 := rng.uniform(0.4, 0.55), t1 + 0.02, rng.uniform(0.7, 0.9)])
    dose = rng.uniform(0.9, 1.6)  # the contrast agent's effect, in the tumour and the vessels alike
    patchy = np.clip(0.6 + 0.4 * _smooth_noise(rng, shape, 1.5), 0.25, 1.0)

    norm_grid = 2 * grid / (np.array(shape)[:, None, None, None] - 1) - 1
    blur_axis = int(rng.integers(3))
    images = np.empty((len(CHANNELS), *shape), np.float32)
    for ch in range(len(CHANNELS)):
        table = _TABLE[:, ch] * rng.normal(1.0, 0.08, len(_TABLE))  # this scanner's contrast
        image = np.tensordot(table[:3], anatomy, axes=1)
        edema = table[2] + (table[3] - table[2]) * edema_contrast  # white matter at contrast 0, edema at 1
        contrast = dose if CHANNELS[ch] == "t1gd" else 1.0
        enhancing = table[5] * contrast * (patchy if CHANNELS[ch] == "t1gd" else 1.0)
        image += (parts[0] * edema + parts[1] * necrosis_row[ch] * table[4] / _TABLE[4, ch]
                  + parts[2] * solid_row[ch] * table[4] / _TABLE[4, ch] + parts[3] * enhancing) * heterogeneity
        image += (_VESSEL[ch] * vessels + _CHOROID[ch] * choroid) * contrast + _WMH[ch] * wmh
        image = np.clip(image, 0, None) ** rng.uniform(0.85, 1.15) * rng.uniform(0.6, 1.6)
        image *= _bias_field(rng, norm_grid, rng.uniform(0.05, 0.25))
        sigma = rng.uniform(0.0, 0.4, 3)
        sigma[blur_axis] = rng.uniform(0.3, 1.1)  # thick slices along one axis, the same for the subject
        image = gaussian_filter(image, sigma) + rng.normal(0.0, rng.uniform(0.01, 0.05) * image.mean() * 2, shape)
        images[ch] = image
    return images, labels


def write_brats_dataset(raw_root: str, dataset_id: int, name: str = "CMCLBraTS", num_cases: int = 24,
                        shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0, with_labels: bool = True) -> str:
    """Writes Dataset{id:03d}_{name} of simulated BraTS-like MRI under raw_root and returns its folder.

    Channels and labels as the module docstring says; dataset.json has nnU-Net's BraTS regions and
    ``regions_class_order``. ``shape`` in numpy (z, y, x) order; spacing as in write_brain_dataset. Case i uses
    rng seeded by (seed, i), so a pool of another seed holds other subjects. Needs nilearn.
    """
    _check_id_and_cases(dataset_id, num_cases)
    if len(shape) != 3 or min(shape) < 24:
        raise ValueError(f"shape must have 3 entries (z, y, x), each >= 24 (tumours need room), got {shape}")
    folder_name, target = _claim_target(raw_root, dataset_id, name)
    template, spacing = _mni152(tuple(int(s) for s in shape))

    def fill(tmp: str) -> None:
        write_cases(tmp, name, num_cases, seed, lambda rng: brats_case(rng, template), with_labels, spacing)
        generate_dataset_json(tmp, channel_names={str(c): m for c, m in enumerate(CHANNELS)}, labels=LABELS,
                              regions_class_order=REGIONS_CLASS_ORDER, num_training_cases=num_cases,
                              file_ending=".nii.gz", dataset_name=folder_name,
                              description="simulated BraTS-like glioma MRI on nilearn's MNI152 anatomy "
                                          "(nnunet_cmcl.data.brats); labels 1 edema, 2 non-enhancing/necrotic "
                                          "core, 3 enhancing tumour")

    return build_dataset_atomically(target, with_labels, fill)

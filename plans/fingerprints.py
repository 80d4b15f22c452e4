"""nnU-Net's standard plans of typical datasets, planned from a dataset fingerprint alone (no images needed).

nnU-Net's planners read only ``dataset_fingerprint.json`` (spacings, shapes after cropping, intensities), the
dataset.json and the reader of one training image. ``standard_plans`` writes those for a described dataset into a
temporary nnUNet_raw / nnUNet_preprocessed and runs nnU-Net's own planners there, so the plans are the ones that
``nnUNetv2_plan_experiment`` would make for a dataset of that fingerprint.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json

# nnU-Net's default planner and its residual-encoder presets (8 GB, 24 GB)
PLANNERS = ("ExperimentPlanner", "nnUNetPlannerResEncM", "nnUNetPlannerResEncL")


@dataclass(frozen=True)
class DatasetDescription:
    """What nnU-Net's planners read of a dataset: every case of ``shape`` voxels at ``spacing`` mm (z, y, x)."""
    name: str
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    num_cases: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    # the cropped image / the image: below 3/4, nnU-Net's z-score normalises inside the nonzero mask only
    relative_size_after_cropping: float = 1.0
    # foreground intensities (mean, std, 0.5 and 99.5 percentiles); only CT normalisation reads them
    intensities: tuple[float, float, float, float] = (0.0, 1.0, -3.0, 3.0)


# BraTS (Medical Segmentation Decathlon Task01): 484 brain MRIs, 4 sequences, 1 mm, about 138 x 170 x 138 voxels
# after nnU-Net crops them to the nonzero region
BRATS_LIKE = DatasetDescription(
    "BraTSLike", {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    {"background": 0, "edema": 1, "non-enhancing": 2, "enhancing": 3}, 484, (138, 170, 138), (1.0, 1.0, 1.0),
    relative_size_after_cropping=0.6, intensities=(500.0, 200.0, 50.0, 1500.0))

# AMOS-like abdominal CT: one channel, thin in-plane spacing, thicker slices (an approximation of AMOS 2022)
AMOS_LIKE = DatasetDescription(
    "AMOSLike", {"0": "CT"}, {"background": 0, **{f"organ{i}": i for i in range(1, 16)}}, 200, (110, 420, 420),
    (2.0, 0.75, 0.75), intensities=(50.0, 150.0, -950.0, 1200.0))


def dataset_json_of(dataset: DatasetDescription) -> dict:
    return {"channel_names": dataset.channel_names, "labels": dataset.labels, "numTraining": dataset.num_cases,
            "file_ending": ".nii.gz"}


@contextlib.contextmanager
def _nnunet_folders(root: str):
    """nnUNet_raw and nnUNet_preprocessed under ``root`` while inside (nnunetv2.paths reads them when used), and
    nnUNet_n_proc_DA at least 1: nnU-Net's planner sets torch's thread count from it and fails on 0."""
    saved = {k: os.environ.get(k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_n_proc_DA")}
    os.environ.update(nnUNet_raw=join(root, "raw"), nnUNet_preprocessed=join(root, "preprocessed"))
    if saved["nnUNet_n_proc_DA"] is not None:
        os.environ["nnUNet_n_proc_DA"] = str(max(1, int(saved["nnUNet_n_proc_DA"])))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_fingerprint_dataset(root: str, dataset: DatasetDescription, dataset_id: int) -> str:
    """The dataset.json, the fingerprint and one tiny image (for nnU-Net's choice of reader) under ``root``'s raw
    and preprocessed folders; returns the dataset's folder name."""
    import SimpleITK as sitk

    name = f"Dataset{dataset_id:03d}_{dataset.name}"
    raw, preprocessed = join(root, "raw", name), join(root, "preprocessed", name)
    maybe_mkdir_p(join(raw, "imagesTr"))
    maybe_mkdir_p(preprocessed)
    save_json(dataset_json_of(dataset), join(raw, "dataset.json"), sort_keys=False)
    mean, std, low, high = dataset.intensities
    channel = {"mean": mean, "median": mean, "std": std, "min": low, "max": high, "percentile_00_5": low,
               "percentile_99_5": high}
    save_json({"spacings": [list(dataset.spacing)] * dataset.num_cases,
               "shapes_after_crop": [list(dataset.shape)] * dataset.num_cases,
               "foreground_intensity_properties_per_channel": {c: channel for c in dataset.channel_names},
               "median_relative_size_after_cropping": dataset.relative_size_after_cropping},
              join(preprocessed, "dataset_fingerprint.json"), sort_keys=False)
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in reversed(dataset.spacing)))  # SimpleITK's order is x, y, z
    sitk.WriteImage(image, join(raw, "imagesTr", f"{dataset.name}_000_0000.nii.gz"))
    return name


def _planner_class(name: str) -> type:
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncL, nnUNetPlannerResEncM)

    return {"ExperimentPlanner": ExperimentPlanner, "nnUNetPlannerResEncM": nnUNetPlannerResEncM,
            "nnUNetPlannerResEncL": nnUNetPlannerResEncL}[name]


def standard_plans(dataset: DatasetDescription = BRATS_LIKE, planners: tuple[str, ...] = PLANNERS,
                   dataset_id: int = 990) -> tuple[dict[str, dict], dict]:
    """({plans name: plans} as nnU-Net's ``planners`` make them for ``dataset``, its dataset.json); the planners'
    printout is swallowed. Takes a few seconds."""
    with tempfile.TemporaryDirectory() as root, _nnunet_folders(root):
        name = write_fingerprint_dataset(root, dataset, dataset_id)
        plans = {}
        for planner in planners:
            with contextlib.redirect_stdout(io.StringIO()):
                made = _planner_class(planner)(name).plan_experiment()
            plans[made["plans_name"]] = made
    return plans, dataset_json_of(dataset)

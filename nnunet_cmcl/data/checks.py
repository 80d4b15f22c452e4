"""NaN or Inf voxels in a raw dataset's images, found before preprocessing and training.

nnU-Net's ``--verify_dataset_integrity`` looks for NaN but not for Inf. Either one turns the z-score normalisation of
the whole channel non-finite, and the CMCL trainer would then skip every step that samples that case. Images are
read with the dataset's own nnU-Net reader, so every file format nnU-Net reads is checked.
"""
from __future__ import annotations

import multiprocessing

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import dataset_name


def _nonfinite_voxels(job: tuple[str, list[str], dict]) -> tuple[str, list[int]]:
    """(identifier, number of non-finite voxels per channel) of one case."""
    identifier, files, dataset_json = job
    reader = determine_reader_writer_from_dataset_json(dataset_json, files[0], verbose=False)()
    images, _ = reader.read_images(files)
    return identifier, [int(np.size(c) - np.count_nonzero(np.isfinite(c))) for c in images]


def check_finite_images(raw_dataset_folder: str, processes: int = 1) -> int:
    """Raises CMCLInputError naming the first image with NaN/Inf voxels; returns the number of cases checked."""
    dataset_json_file = join(raw_dataset_folder, "dataset.json")
    if not isfile(dataset_json_file):
        raise CMCLInputError(f"{dataset_json_file} does not exist; give a dataset in nnUNet_raw format")
    dataset_json = load_json(dataset_json_file)
    cases = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    jobs = [(identifier, case["images"], dataset_json) for identifier, case in sorted(cases.items())]
    if not jobs:
        raise CMCLInputError(f"{raw_dataset_folder} holds no training images; put the cases in imagesTr")
    bad = {}
    with multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else _InProcess() as pool:
        for n, (identifier, counts) in enumerate(pool.imap(_nonfinite_voxels, jobs), 1):
            if any(counts):
                bad[identifier] = counts
            if n % 50 == 0 or n == len(jobs):
                print(f"[check-data] {n}/{len(jobs)} cases read, {len(bad)} with NaN/Inf voxels", flush=True)
    if bad:
        identifier, counts = next(iter(bad.items()))
        channel = next(c for c, count in enumerate(counts) if count)
        raise CMCLInputError(
            f"{len(bad)} case(s) of {raw_dataset_folder} have NaN/Inf voxels, first {cases[identifier]['images'][channel]}"
            f" ({counts[channel]} voxels); replace them (e.g. with the image's minimum) and preprocess again")
    return len(jobs)


def check_dataset_finite(dataset: str, processes: int = 1) -> tuple[str, int]:
    """check_finite_images for a dataset (name or id) in nnUNet_raw; returns (its folder, cases checked)."""
    from nnunetv2.paths import nnUNet_raw

    folder = join(nnUNet_raw, dataset_name(dataset))
    return folder, check_finite_images(folder, processes)


class _InProcess:
    """Pool stand-in for one process: no worker start-up cost on small datasets."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(function, jobs):
        return map(function, jobs)

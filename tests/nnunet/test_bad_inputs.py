"""Bad input gets one line on stderr naming the input and the fix, exit code 2, no traceback, nothing written.

Covered here: unset nnUNet_* paths, unknown dataset, missing fold, NaN/Inf voxels, non-checkpoint and malicious
files. Elsewhere: one-channel data (test_trainer), other channels or plans (test_handoff), truncated checkpoints
(test_handoff), unfinished runs (test_study).
"""
import json
import os
import pickle

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import nnunet_env, run
from nnunet_cmcl.data.synthetic import write_phantom_dataset


def one_line_error(proc, *fragments: str) -> None:
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def snapshot(folder: str) -> dict:
    """Every file under folder with its size and modification time."""
    return {os.path.join(r, f): (os.path.getsize(os.path.join(r, f)), os.path.getmtime(os.path.join(r, f)))
            for r, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("name", ["nnUNet_preprocessed", "nnUNet_results"])
def test_unset_nnunet_path(phantom_env, name):
    env = {k: v for k, v in phantom_env.items() if k != name}
    proc = run(["nnunet-cmcl", "evaluate-missing", "-d", "501", "-tr", "nnUNetTrainer_test", "-f", "0", "--drop",
                "T2", "--device", "cpu"], env, expect=2)
    one_line_error(proc, f"{name} is not set; export {name}=")


def test_path_that_is_not_a_folder(phantom_env, tmp_path):
    proc = run(["nnunet-cmcl", "splits", "-d", "501", "--fractions", "0.5"],
               {**phantom_env, "nnUNet_preprocessed": str(tmp_path / "nowhere")}, expect=2)
    one_line_error(proc, "is not a folder")


def test_unknown_dataset_id(phantom_env):
    one_line_error(run(["nnunet-cmcl", "splits", "-d", "977", "--fractions", "0.5"], phantom_env, expect=2),
                   "dataset 977 is not in nnUNet_raw or nnUNet_preprocessed")


def test_fold_that_does_not_exist(phantom_env, baseline, finetuned):
    before = snapshot(phantom_env["nnUNet_results"])
    proc = run(["nnunet-cmcl", "compare", "-d", "501", "--baseline", "nnUNetTrainer_test", "--candidate",
                "nnUNetTrainerCMCLFinetune_test", "--folds", "0", "7"], phantom_env, expect=2)
    one_line_error(proc, "fold 7 of nnUNetTrainer_test does not exist")
    proc = run(["nnunet-cmcl", "evaluate-missing", "-d", "501", "-tr", "nnUNetTrainer_test", "-f", "7", "--drop",
                "T2", "--device", "cpu"], phantom_env, expect=2)
    one_line_error(proc, "no finished fold 7")
    assert snapshot(phantom_env["nnUNet_results"]) == before


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_voxels_stop_prepare_before_anything_is_written(phantom_env, tmp_path, value):
    env = nnunet_env(str(tmp_path))
    env["nnUNet_preprocessed"] = phantom_env["nnUNet_preprocessed"]  # the target 501 lives there
    folder = write_phantom_dataset(env["nnUNet_raw"], 612, num_cases=3, shape=(16, 16, 16), with_labels=False)
    # SimpleITK's NIfTI reader (nnU-Net's default) turns NaN/Inf into 0; nibabel, .nrrd and .mha keep them
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({**dataset_json, "overwrite_image_reader_writer": "NibabelIO"}, f)
    path = os.path.join(folder, "imagesTr", "CMCLPhantom_002_0001.nii.gz")
    image = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(image)
    array[4, 5, 6] = value
    corrupted = sitk.GetImageFromArray(array)
    corrupted.CopyInformation(image)
    sitk.WriteImage(corrupted, path)

    one_line_error(run(["nnunet-cmcl", "check-data", "-d", "612", "-np", "1"], env, expect=2),
                   "1 case(s)", "CMCLPhantom_002_0001.nii.gz (1 voxels)")
    before = snapshot(env["nnUNet_preprocessed"])
    one_line_error(run(["nnunet-cmcl", "prepare", "-s", "501", "-t", "612", "-np", "1"], env, expect=2),
                   "CMCLPhantom_002_0001.nii.gz", "replace them")
    assert snapshot(env["nnUNet_preprocessed"]) == before  # no plans moved, nothing preprocessed


class RunsCode:
    """A pickle that runs code when loaded: what a malicious 'checkpoint' does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_checkpoint_runs_no_code(phantom_env, tmp_path):
    marker, path = tmp_path / "code_ran", tmp_path / "checkpoint_final.pth"
    with open(path, "wb") as f:
        pickle.dump({"network_weights": RunsCode(str(marker))}, f)
    one_line_error(run(["nnunet-cmcl", "inspect", str(path)], phantom_env, expect=2), str(path),
                   "cannot be read safely")
    # fine-tuning reads it safely before nnU-Net's own loader (torch.load with weights_only=False) would run it
    env = {**phantom_env, "nnUNet_results": str(tmp_path / "results")}  # the shared results stay as they are
    proc = run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerCMCLFinetune_test",
                "-pretrained_weights", str(path), "-device", "cpu"], env, expect=1)
    assert "cannot be read safely" in proc.stderr
    assert not marker.exists()


def test_file_that_is_not_a_checkpoint(phantom_env, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text('{"not": "a checkpoint"}')
    one_line_error(run(["nnunet-cmcl", "verify", str(path), "-d", "501", "-c", "3d_fullres"], phantom_env, expect=2),
                   str(path))

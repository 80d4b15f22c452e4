"""The nnU-Net set-up the demo and the study presets share: nnU-Net's folders in one workdir, and nnU-Net's
planning and preprocessing run once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from nnunet_cmcl.naming import dataset_name

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def use_workdir(workdir: str, **env_defaults: str) -> str:
    """Points nnUNet_raw, nnUNet_preprocessed and nnUNet_results at folders of that name in ``workdir`` (created)
    and sets each of ``env_defaults`` (e.g. nnUNet_compile="false") that is not set yet; returns the absolute
    workdir. Call it before nnunetv2.paths is imported: nnU-Net reads the variables when its modules are imported."""
    workdir = os.path.abspath(workdir)
    for name in NNUNET_FOLDERS:
        os.environ[name] = os.path.join(workdir, name)
        os.makedirs(os.environ[name], exist_ok=True)
    for name, value in env_defaults.items():
        os.environ.setdefault(name, value)
    return workdir


def _is_preprocessed(folder: str, configuration: str) -> bool:
    """nnUNetPlans.json exists and holds ``configuration``, whose preprocessed data folder exists."""
    try:
        with open(os.path.join(folder, "nnUNetPlans.json")) as f:
            configurations = json.load(f)["configurations"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    identifier = configurations.get(configuration, {}).get("data_identifier")  # e.g. nnUNetPlans_3d_fullres
    return identifier is not None and os.path.isdir(os.path.join(folder, identifier))


def plan_and_preprocess_once(dataset_id: int, configuration: str, verify_dataset_integrity: bool = False) -> bool:
    """nnUNetv2_plan_and_preprocess of dataset ``dataset_id`` in nnUNet_raw for ``configuration`` (2 processes, its
    output silenced) unless nnUNet_preprocessed already has its plans and data; True if it ran."""
    if _is_preprocessed(os.path.join(os.environ["nnUNet_preprocessed"], dataset_name(dataset_id)), configuration):
        return False
    exe = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_plan_and_preprocess")
    command = [exe, "-d", str(dataset_id), "-c", configuration, "-np", "2", "-npfp", "2", "--no_pbar"]
    # nnU-Net's planner sets torch's thread count from nnUNet_n_proc_DA and fails on 0 (0: batches drawn in the
    # main process, which the training runs may well ask for)
    env = {**os.environ, "nnUNet_n_proc_DA": str(max(1, int(os.environ.get("nnUNet_n_proc_DA", "1"))))}
    subprocess.run(command + (["--verify_dataset_integrity"] if verify_dataset_integrity else []), check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return True

"""`nnunet-cmcl demo`: from nothing to a comparison on built-in data, on the CPU, resumable.

synthetic dataset -> nnUNetv2_plan_and_preprocess -> CMCL pretraining on all cases without labels ->
fine-tuning and a vanilla baseline with identical budgets on a low label fraction -> compare.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_cmcl.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.finetune import nnUNetTrainerCMCLFinetune
from nnunet_cmcl.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.variants import nnUNetTrainerCMCL_Aug

DATASET_ID = 950
PRETRAINING_BUDGET = {"num_epochs": 8, "num_iterations_per_epoch": 30, "num_val_iterations_per_epoch": 8}
# one budget for the two segmentation trainers, so the comparison is fair
SEGMENTATION_BUDGET = {"num_epochs": 8, "num_iterations_per_epoch": 12, "num_val_iterations_per_epoch": 5}
SCALE_ENV = "nnUNet_CMCL_demo_scale"  # < 1 shrinks every budget alike: for checks of the plumbing, not results


def scaled(budget: dict) -> dict:
    scale = float(os.environ.get(SCALE_ENV, "1"))
    return {k: max(1, round(v * scale)) for k, v in budget.items()}


class _PretrainingBudget:
    """Mixin: the demo's pretraining budget for any CMCL trainer (read by its __init__ through ``overrides``)."""

    @property
    def overrides(self) -> dict:
        return scaled(PRETRAINING_BUDGET)


class nnUNetTrainerCMCL_demo(_PretrainingBudget, nnUNetTrainerCMCL):
    pass


class nnUNetTrainerCMCLFinetune_demo(nnUNetTrainerCMCLFinetune):
    warmup_epochs = 2

    @property
    def overrides(self) -> dict:
        return scaled(SEGMENTATION_BUDGET)


class nnUNetTrainerCMCL_DAE_demo(_PretrainingBudget, nnUNetTrainerCMCL_DAE):
    """The reconstruction hybrid with the demo's pretraining budget (scripts/hybrid_study.py)."""


class nnUNetTrainerCMCL_Aug_demo(_PretrainingBudget, nnUNetTrainerCMCL_Aug):
    """One-modality views with the demo's pretraining budget (scripts/hybrid_study.py)."""


class nnUNetTrainerCMCLFinetune_demoDAE(nnUNetTrainerCMCLFinetune_demo):
    """The same fine-tuning as nnUNetTrainerCMCLFinetune_demo, in its own results folder (for DAE checkpoints)."""


class nnUNetTrainerVanilla_demo(nnUNetTrainer):
    """nnU-Net's own trainer, unchanged but for the demo's budget: the baseline."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        vars(self).update(scaled(SEGMENTATION_BUDGET))


def plan_and_preprocess_once(dataset_id: int) -> bool:
    """nnUNetv2_plan_and_preprocess (3d_fullres, integrity check) unless its output exists; True if it ran."""
    from nnunet_cmcl.prepare import dataset_name

    folder = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name(dataset_id))
    if os.path.isfile(os.path.join(folder, "nnUNetPlans.json")) and os.path.isdir(
            os.path.join(folder, "nnUNetPlans_3d_fullres")):
        return False
    exe = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_plan_and_preprocess")
    subprocess.run([exe, "-d", str(dataset_id), "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar",
                    "--verify_dataset_integrity"], check=True, stdout=subprocess.DEVNULL)
    return True


def _step(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run_demo(workdir: str, kind: str = "brain", cases: int = 20, fraction: float = 0.25, seed: int = 0,
             device: str = "cpu") -> str:
    """Runs (or finishes) the demo in ``workdir``; returns the comparison folder."""
    start = time.time()
    workdir = os.path.abspath(workdir)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(workdir, name)
        os.makedirs(os.environ[name], exist_ok=True)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ.setdefault("nnUNet_compile", "false")

    from nnunet_cmcl.experiment import execute, plan_runs
    from nnunet_cmcl.prepare import dataset_name
    from nnunet_cmcl.synthetic import write_brain_dataset, write_phantom_dataset

    raw = os.environ["nnUNet_raw"]
    existing = [d for d in os.listdir(raw) if d.startswith(f"Dataset{DATASET_ID}_")]
    if existing:
        _step(f"1/4 dataset {existing[0]} exists, kept")
    else:
        _step(f"1/4 writing the {kind} dataset ({cases} cases)")
        writer = write_brain_dataset if kind == "brain" else write_phantom_dataset
        writer(raw, DATASET_ID, num_cases=cases, seed=seed)
    name = dataset_name(DATASET_ID)
    _step("2/4 " + ("nnUNetv2_plan_and_preprocess" if plan_and_preprocess_once(DATASET_ID) else
                    "plans and preprocessed data exist, kept"))
    _step(f"3/4 pretraining, then fine-tuning and baseline on fold 0 with {fraction:g} of its labels")
    runs, _ = plan_runs(name, "3d_fullres", "nnUNetPlans", [0], [fraction], seed, "nnUNetTrainerCMCL_demo",
                        "nnUNetTrainerCMCLFinetune_demo", "nnUNetTrainerVanilla_demo")
    execute(runs, str(DATASET_ID), "3d_fullres", "nnUNetPlans", device, os.path.join(workdir, "logs"))
    _step("4/4 compare")
    from nnunet_cmcl.compare import compare, default_output_folder, format_table, write_report

    results = os.path.join(os.environ["nnUNet_results"], name)
    result = compare(results, "nnUNetTrainerVanilla_demo", "nnUNetTrainerCMCLFinetune_demo", "nnUNetPlans",
                     "3d_fullres", [runs[1].fold])
    output = default_output_folder(results, "nnUNetTrainerVanilla_demo", "nnUNetTrainerCMCLFinetune_demo",
                                   "nnUNetPlans", "3d_fullres")
    write_report(result, output)
    print(format_table(result))
    _step(f"done in {time.time() - start:.0f} s; report in {output}")
    return output

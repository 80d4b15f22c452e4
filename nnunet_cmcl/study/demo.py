"""`nnunet-cmcl demo`: from nothing to a comparison on built-in data, on the CPU, resumable.

synthetic dataset (by default the BraTS-like one the study measures, docs/brats.md) ->
nnUNetv2_plan_and_preprocess -> CMCL pretraining on fold 0's training images, no labels -> fine-tuning and a
vanilla baseline with identical budgets on a low label fraction -> compare.
"""
from __future__ import annotations

import os
import time

from nnunet_cmcl.naming import dataset_name
from nnunet_cmcl.study.workdir import plan_and_preprocess_once, use_workdir

DATASET_ID = 950


def _step(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def study_of(kind: str) -> str:
    """The CPU preset that measures what the demo only runs: the one on the demo's data (the BraTS-like one for
    the phantom, which no preset runs on)."""
    from nnunet_cmcl.study.preset import PRESETS

    return next((name for name, p in PRESETS.items() if p.data == kind), "cpu")


def what_the_numbers_show(n_cases: int, kind: str = "brats") -> str:
    """The lines printed under the demo's table: what a comparison of its size can and cannot show."""
    return "\n".join([
        f"These numbers show that the pipeline runs, not whether pretraining pays: short budgets, {n_cases} "
        f"validation cases and one seed,",
        "so no difference in this table is evidence either way. The study (3 seeds, an A/A noise floor, "
        "hierarchical CIs) and its results:",
        f"docs/study.md; rerun it with `nnunet-cmcl study --preset {study_of(kind)}`."])


def run_demo(workdir: str, kind: str = "brats", cases: int = 20, fraction: float = 0.25, seed: int = 0,
             device: str = "cpu") -> str:
    """Runs (or finishes) the demo in ``workdir``; returns the comparison folder."""
    start = time.time()
    workdir = use_workdir(workdir, nnUNet_n_proc_DA="2", nnUNet_compile="false")

    # imported once the nnUNet_* variables are set: nnU-Net reads them when its modules are imported
    from nnunet_cmcl.data.writers import write_dataset
    from nnunet_cmcl.evaluation.comparison_report import compare_and_report, format_table
    from nnunet_cmcl.study.experiment import execute
    from nnunet_cmcl.study.plan import Arm, plan_runs

    raw = os.environ["nnUNet_raw"]
    existing = [d for d in os.listdir(raw) if d.startswith(f"Dataset{DATASET_ID}_")]
    if existing:
        _step(f"1/4 dataset {existing[0]} exists, kept")
    else:
        _step(f"1/4 writing the {kind} dataset ({cases} cases)")
        write_dataset(kind, raw, DATASET_ID, num_cases=cases, seed=seed)
    name = dataset_name(DATASET_ID)
    ran = plan_and_preprocess_once(DATASET_ID, "3d_fullres", verify_dataset_integrity=True)
    _step("2/4 " + ("nnUNetv2_plan_and_preprocess" if ran else "plans and preprocessed data exist, kept"))
    _step(f"3/4 pretraining on fold 0's training images, then fine-tuning and baseline with {fraction:g} of its "
          f"labels")
    runs = plan_runs(name, "3d_fullres", "nnUNetPlans", [0], [fraction], seed,
                     [Arm("baseline", "nnUNetTrainerSeeded_demo"),
                      Arm("CMCL", "nnUNetTrainerCMCLFinetune_demo", "nnUNetTrainerCMCL_demo")])
    execute(runs, str(DATASET_ID), "3d_fullres", "nnUNetPlans", device, os.path.join(workdir, "logs"))
    _step("4/4 compare")
    result, paths = compare_and_report(str(DATASET_ID), "3d_fullres", "nnUNetPlans", "nnUNetTrainerSeeded_demo",
                                       "nnUNetTrainerCMCLFinetune_demo", [runs[-1].fold])
    print(format_table(result))
    print(what_the_numbers_show(result["n_cases"], kind))
    output = os.path.dirname(paths["md"])
    _step(f"done in {time.time() - start:.0f} s; report in {output}")
    return output

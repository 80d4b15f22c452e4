"""Vanilla vs CMCL vs CMCL_DAE on the demo's data, and vanilla vs CMCL_Aug on a one-modality (T1) copy of it.

Equal budgets throughout: every pretraining has the demo's pretraining budget, every segmentation run the demo's
segmentation budget, on the same 25% label fold and validation cases. Runs the demo first (skipped where it has
finished), then only what is missing, with nnU-Net's commands; prints one table of paired comparisons.

    python scripts/hybrid_study.py --workdir cmcl_demo
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from nnunet_cmcl.data.synthetic import build_dataset_atomically
from nnunet_cmcl.study.demo import DATASET_ID, run_demo
from nnunet_cmcl.study.workdir import plan_and_preprocess_once

ONE_MODALITY_ID = DATASET_ID + 1
FRACTION, SEED = 0.25, 0


def one_modality_copy(raw: str, source: str) -> str:
    """Dataset{ONE_MODALITY_ID}: the T1 channel and the labels of ``source``, same case names (same folds)."""
    target = os.path.join(raw, f"Dataset{ONE_MODALITY_ID}_CMCLBrainT1")
    if os.path.isdir(target):
        return target

    def fill(folder: str) -> None:
        for name in os.listdir(os.path.join(source, "imagesTr")):
            if name.endswith("_0000.nii.gz"):
                shutil.copy(os.path.join(source, "imagesTr", name), os.path.join(folder, "imagesTr", name))
        for name in os.listdir(os.path.join(source, "labelsTr")):
            shutil.copy(os.path.join(source, "labelsTr", name), os.path.join(folder, "labelsTr", name))
        with open(os.path.join(source, "dataset.json")) as f:
            dataset_json = json.load(f)
        dataset_json.update(channel_names={"0": "T1"}, name=os.path.basename(target))
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump(dataset_json, f, indent=2)

    return build_dataset_atomically(target, True, fill)


def study(dataset_id: int, pretrainer: str, finetuner: str, workdir: str) -> dict:
    from nnunet_cmcl.evaluation.compare import compare
    from nnunet_cmcl.naming import dataset_name
    from nnunet_cmcl.study.experiment import execute
    from nnunet_cmcl.study.plan import Arm, plan_runs

    name = dataset_name(dataset_id)
    runs = plan_runs(name, "3d_fullres", "nnUNetPlans", [0], [FRACTION], SEED,
                     [Arm("baseline", "nnUNetTrainerSeeded_demo"), Arm("pretrained", finetuner, pretrainer)])
    execute(runs, str(dataset_id), "3d_fullres", "nnUNetPlans", "cpu", os.path.join(workdir, "logs"))
    results = os.path.join(os.environ["nnUNet_results"], name)
    return compare(results, "nnUNetTrainerSeeded_demo", finetuner, "nnUNetPlans", "3d_fullres", [runs[-1].fold])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="cmcl_demo")
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir)
    run_demo(workdir, kind="brain")  # sets nnUNet_* to the workdir; skips what has finished
    from nnunet_cmcl.naming import dataset_name

    rows = [("T1, T2, FLAIR", "CMCL (demo)", study(DATASET_ID, "nnUNetTrainerCMCL_demo",
                                                   "nnUNetTrainerCMCLFinetune_demo", workdir)),
            ("T1, T2, FLAIR", "CMCL_DAE", study(DATASET_ID, "nnUNetTrainerCMCL_DAE_demo",
                                                "nnUNetTrainerCMCLFinetune_fromDAE_demo", workdir))]
    source = os.path.join(os.environ["nnUNet_raw"], dataset_name(DATASET_ID))
    one_modality_copy(os.environ["nnUNet_raw"], source)
    plan_and_preprocess_once(ONE_MODALITY_ID, "3d_fullres", verify_dataset_integrity=True)
    rows.append(("T1 only", "CMCL_Aug", study(ONE_MODALITY_ID, "nnUNetTrainerCMCL_Aug_demo",
                                              "nnUNetTrainerCMCLFinetune_demo", workdir)))

    print("| channels | pretraining | vanilla mean Dice | fine-tuned mean Dice | diff | 95% CI | Wilcoxon p | W/T/L | n |")
    print("|---|---|---|---|---|---|---|---|---|")
    for channels, pretraining, result in rows:
        m = next(r for r in result["rows"] if r["class"] == "mean")
        print(f"| {channels} | {pretraining} | {m['baseline_dice']:.4f} | {m['candidate_dice']:.4f} | "
              f"{m['diff']:+.4f} | [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {m['p_wilcoxon']:.3f} | "
              f"{m['wins']}/{m['ties']}/{m['losses']} | {m['n']} |")


if __name__ == "__main__":
    main()

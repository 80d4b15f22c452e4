"""nnU-Net's learning curve on the BraTS-like built-in data: is it a benchmark where labels matter?

nnU-Net alone (nnUNetTrainerSeeded, 2d, batch 8, by default with the BraTS-like study's budget), one fold of 16 training
and 24 validation cases of `synth brats`, Dice per region (whole tumour, tumour core, enhancing tumour) and mean
against 2, 4, 8 and all 16 labeled cases. Each training seed s draws its own labeled subsets (label seed s), so
the spread over seeds covers which cases are labeled as well as the training's randomness. Convergence by the
study's rule (`stats.convergence`). One command, resumable; writes the table (markdown) and the PNG.

    python scripts/brats_learning_curve.py --workdir cmcl_brats_curve --seeds 0 1 2 \
        --png docs/brats_learning_curve.png --table docs/brats_learning_curve.md
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

DATASET_ID, TRAIN_CASES, VAL_CASES = 980, 16, 24
CONFIGURATION, PLANS, BATCH = "2d", "nnUNetPlans_cpuPreset", 8
LABELED = (2, 4, 8, 16)


def prepare() -> str:
    """The dataset, nnU-Net's planning and preprocessing, the plans with the preset's batch, fold 0; its name."""
    from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    from nnunet_cmcl.data.brats import write_brats_dataset
    from nnunet_cmcl.naming import dataset_name
    from nnunet_cmcl.study.workdir import plan_and_preprocess_once

    if not any(d.startswith(f"Dataset{DATASET_ID}_") for d in os.listdir(nnUNet_raw)):
        write_brats_dataset(nnUNet_raw, DATASET_ID, "CMCLBraTSCurve", TRAIN_CASES + VAL_CASES, seed=0)
    plan_and_preprocess_once(DATASET_ID, CONFIGURATION, verify_dataset_integrity=True)
    name = dataset_name(DATASET_ID)
    folder = join(nnUNet_preprocessed, name)
    if not isfile(join(folder, PLANS + ".json")):
        plans = load_json(join(folder, "nnUNetPlans.json"))
        plans["plans_name"] = PLANS
        plans["configurations"][CONFIGURATION]["batch_size"] = BATCH
        save_json(plans, join(folder, PLANS + ".json"), sort_keys=False)
    if not isfile(join(folder, "splits_final.json")):
        ids = [f"CMCLBraTSCurve_{i:03d}" for i in range(TRAIN_CASES + VAL_CASES)]
        save_json([{"train": ids[:TRAIN_CASES], "val": ids[TRAIN_CASES:]}], join(folder, "splits_final.json"))
    return name


def curve_table(records: list[dict], curves: list[dict], regions: dict) -> tuple[list[str], dict]:
    """Markdown lines and {region key: {n_labeled: [per-seed case-mean Dice]}}; ``regions``: {key: name}."""
    per_seed: dict = {}
    for r in records:
        for key in regions:
            per_seed.setdefault(key, {}).setdefault(r["n_labeled"], {}).setdefault(r["seed"], []).append(
                r["dice"].get(key, np.nan))
    values = {k: {n: [float(np.nanmean(v)) for _, v in sorted(seeds.items())] for n, seeds in sorted(by_n.items())}
              for k, by_n in per_seed.items()}
    converged = {}
    for c in curves:
        converged.setdefault(c["n_labeled"], []).append(c["converged"])
    lines = ["| labeled cases | " + " | ".join(regions.values()) + " | runs converged |",
             "|" + "---|" * (len(regions) + 2)]
    for n in sorted(values["mean"]):
        cells = [f"{np.mean(values[k][n]):.3f} ({min(values[k][n]):.3f}-{max(values[k][n]):.3f})" for k in regions]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {sum(converged[n])} of {len(converged[n])} |")
    return lines, values


def plot(values: dict, regions: dict, path: str, trainer: str) -> None:
    from nnunet_cmcl.evaluation.figures import new_figure, save_png

    fig = new_figure(6, 4)
    ax = fig.subplots()
    for key, label in regions.items():
        ns = sorted(values[key])
        mean = [np.mean(values[key][n]) for n in ns]
        ax.plot(ns, mean, marker="o", label=label, linewidth=2 if key == "mean" else 1)
        for n in ns:
            ax.scatter([n] * len(values[key][n]), values[key][n], s=8, color=ax.lines[-1].get_color(), alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(values["mean"]), [str(n) for n in sorted(values["mean"])])
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("Dice (24 validation cases)")
    ax.set_ylim(0, 1)
    ax.set_title(f"nnU-Net on synth brats ({trainer}, 2d)\nmean over seeds, a dot per seed", fontsize=9)
    ax.legend(fontsize=8)
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labeled", type=int, nargs="+", default=list(LABELED))
    parser.add_argument("--trainer", default="nnUNetTrainerSeeded_brats_cpuPreset",
                        help="nnU-Net's trainer with the budget to size (default: the BraTS-like study's, 4,000 "
                             "iterations; the committed curve was at 2,000; nnUNetTrainerSeeded_brats2x_cpuPreset: "
                             "8,000)")
    parser.add_argument("--png", default=None)
    parser.add_argument("--table", default=None)
    args = parser.parse_args()
    from nnunet_cmcl.study.workdir import use_workdir

    start = time.time()
    use_workdir(os.path.abspath(args.workdir), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="2", nnUNet_compile="false")
    from batchgenerators.utilities.file_and_folder_operations import join
    from nnunetv2.paths import nnUNet_results

    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_cmcl.evaluation.compare import class_names
    from nnunet_cmcl.evaluation.curves import learning_curves
    from nnunet_cmcl.evaluation.stats import load_records
    from nnunet_cmcl.study.experiment import run_experiment
    from nnunet_cmcl.study.plan import Arm

    name = prepare()
    runs = []
    for seed in args.seeds:  # label seed = training seed: each repeat has its own labeled cases
        _, seed_runs = run_experiment(name, CONFIGURATION, PLANS, [0], None, seed,
                                      [Arm("nnU-Net", args.trainer)], "cpu", [seed],
                                      args.labeled, None, f"brats curve seed {seed}")
        runs += [r.record() for r in seed_runs if r.kind == "segmentation"]
    results = join(str(nnUNet_results), name)
    regions = class_names(load_json(join(nnUNet_preprocessed, name, "dataset.json")))
    lines, values = curve_table(load_records(results, PLANS, CONFIGURATION, runs),
                                learning_curves(results, PLANS, CONFIGURATION, runs), regions)
    text = "\n".join(lines)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    if args.png:
        plot(values, regions, args.png, args.trainer)
    print(f"[brats curve] done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

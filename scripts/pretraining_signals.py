"""Pretraining signals of CMCL settings side by side, without a fine-tuning study: short pretraining runs of
nnUNetTrainerCMCL with one setting changed each, on the same preprocessed dataset and budget, in one process.

Prints, per arm and epoch: validation global retrieval top-1, dense retrieval top-1 (queries inside the image),
normalised embedding std (about 1 spread, 0 collapsed) and the training loss; the number of epochs whose std was
under the collapse threshold; and the wall time. A pipeline-level check of the method, not a verdict on
downstream Dice (that is the study's).

    nnUNet_n_proc_DA=2 python scripts/pretraining_signals.py -d 950 --epochs 8 --iterations 30 \\
        --arm default --arm weight_global=1 --arm add_full_view=false
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnunet_cmcl.naming import dataset_name
from nnunet_cmcl.pretraining.config import parse_changes
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL

KEYS = ("val_retrieval_top1", "val_dense_retrieval_top1", "val_embedding_std", "train_losses")


def run_arm(name: str, changes: dict, dataset: str, configuration: str, plans_name: str, budget: dict,
            seed: int) -> dict:
    folder = join(os.environ["nnUNet_preprocessed"], dataset_name(dataset))
    plans = load_json(join(folder, plans_name + ".json"))
    plans["continue_training"] = False  # what nnUNetv2_train sets for a new run
    cls = type(f"nnUNetTrainerCMCL_signals_{name}", (nnUNetTrainerCMCL,),
               {"cmcl_config": replace(nnUNetTrainerCMCL.cmcl_config, **changes), "overrides": budget})
    torch.manual_seed(seed)
    np.random.seed(seed)
    trainer = cls(plans, configuration, "all", load_json(join(folder, "dataset.json")),
                  torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.time()
    trainer.run_training()
    logged = trainer.logger.local_logger.my_fantastic_logging
    result = {key: [round(float(v), 4) for v in logged[key]] for key in KEYS}
    threshold = trainer.cmcl_config.collapse_std_threshold
    result["epochs_below_collapse_threshold"] = sum(v < threshold for v in logged["val_embedding_std"])
    result["seconds"] = round(time.time() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset (preprocessed)")
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("-p", default="nnUNetPlans")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--val-iterations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm", action="append", default=None,
                        help="'default' or CMCLConfig changes such as weight_global=1,flip_views=false (repeatable)")
    parser.add_argument("-o", default=None, help="write the results as JSON here too")
    args = parser.parse_args()
    budget = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
              "num_val_iterations_per_epoch": args.val_iterations}
    results = {}
    for arm in args.arm or ["default"]:
        name = arm.replace("=", "").replace(",", "_").replace(".", "p")
        results[arm] = run_arm(name, parse_changes(arm), args.d, args.c, args.p, budget, args.seed)
        print(f"[signals] {arm}: {json.dumps(results[arm])}", flush=True)
    if args.o:
        with open(args.o, "w") as f:
            json.dump({"budget": budget, "seed": args.seed, "arms": results}, f, indent=2)
    print("\n| arm | global top-1 (first -> best) | dense top-1 inside (first -> best) | std (first -> last) | "
          "epochs std < threshold | s |\n|---|---|---|---|---|---|")
    for arm, r in results.items():
        g, d, s = r["val_retrieval_top1"], r["val_dense_retrieval_top1"], r["val_embedding_std"]
        print(f"| {arm} | {g[0]:.3f} -> {np.nanmax(g):.3f} | {d[0]:.3f} -> {np.nanmax(d):.3f} | "
              f"{s[0]:.3f} -> {s[-1]:.3f} | {r['epochs_below_collapse_threshold']} | {r['seconds']} |")


if __name__ == "__main__":
    main()

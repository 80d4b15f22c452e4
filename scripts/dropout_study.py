"""The measurement that chooses modality dropout's default probability, on the tissue preset's data and budgets.

The preset's all-labels regime (16 labeled cases, 24 validation cases), arms: nnU-Net, nnU-Net with modality
dropout p = 0.1, 0.25 and 0.5, CMCL fine-tuning without dropout and with it at the same p (each paired with the
nnU-Net arm of its p), with the preset's training seeds given by --seeds; every model validated under all 6
absent-modality subsets. One command, resumable (what has finished is skipped); the report goes where
`experiment` writes its own (cmcl_studies/dropout__...), and the console gets its table.

    python scripts/dropout_study.py --workdir cmcl_dropout --seeds 0 1
"""
from __future__ import annotations

import argparse
import os
import time

from nnunet_cmcl.study.plan import Arm

ARMS = (Arm("nnU-Net", "nnUNetTrainerSeeded_cpuPreset"),
        Arm("nnU-Net + dropout 0.1", "nnUNetTrainerSeeded_modalityDropout_p10_cpuPreset"),
        Arm("nnU-Net + dropout 0.25", "nnUNetTrainerSeeded_modalityDropout_p25_cpuPreset"),
        Arm("nnU-Net + dropout 0.5", "nnUNetTrainerSeeded_modalityDropout_p50_cpuPreset"),
        Arm("CMCL", "nnUNetTrainerCMCLFinetune_cpuPreset", "nnUNetTrainerCMCL_cpuPreset"),
        Arm("CMCL + dropout 0.1", "nnUNetTrainerCMCLFinetune_modalityDropout_p10_cpuPreset",
            "nnUNetTrainerCMCL_cpuPreset", "nnU-Net + dropout 0.1"),
        Arm("CMCL + dropout 0.25", "nnUNetTrainerCMCLFinetune_modalityDropout_p25_cpuPreset",
            "nnUNetTrainerCMCL_cpuPreset", "nnU-Net + dropout 0.25"),
        Arm("CMCL + dropout 0.5", "nnUNetTrainerCMCLFinetune_modalityDropout_p50_cpuPreset",
            "nnUNetTrainerCMCL_cpuPreset", "nnU-Net + dropout 0.5"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--missing-seeds", type=int, nargs="+", default=None,
                        help="the seeds validated under every absent subset (default: all of --seeds)")
    args = parser.parse_args()
    from nnunet_cmcl.study.preset import STUDY_PLANS, TISSUE, preprocess, write_data
    from nnunet_cmcl.study.workdir import use_workdir

    start = time.time()
    use_workdir(os.path.abspath(args.workdir), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="2", nnUNet_compile="false")
    from nnunet_cmcl.study.experiment import (evaluate_missing_modalities, missing_subsets, report_experiment,
                                              run_experiment)

    study, pool = write_data(TISSUE)
    preprocess(TISSUE, study, pool)
    arms = list(ARMS)
    name, runs = run_experiment(study, TISSUE.configuration, STUDY_PLANS, [0], None, 0, arms, "cpu", args.seeds,
                                [TISSUE.train_cases], pool, "dropout study")
    seeds = args.missing_seeds or args.seeds
    subsets = missing_subsets(study, ["all"])
    missing = evaluate_missing_modalities(name, TISSUE.configuration, STUDY_PLANS, runs, subsets, "cpu", seeds)
    print(report_experiment(name, TISSUE.configuration, STUDY_PLANS, runs, arms, "dropout", missing, seeds))
    print(f"[dropout study] done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

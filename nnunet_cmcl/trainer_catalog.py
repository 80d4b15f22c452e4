"""The public trainers, grouped, each with one line of what it changes: what `nnunet-cmcl trainers` prints.

The public trainers are the modules at the top of the trainers folder (``nnunet-cmcl trainer-path``); the study's
and the demo's budgets are in its ``budgets/`` sub-folder, which nnU-Net's class finder searches too.
The tests check that this catalogue and the folder name the same trainers.
"""
from __future__ import annotations

import os

from nnunet_cmcl.naming import trainer_path

BUDGETS_FOLDER = "budgets"

# (group, how it is run, {trainer: what it changes}) in the order a user meets them
CATALOG: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("Pretraining", "nnUNetv2_train D C all -tr NAME; labels are never read", {
        "nnUNetTrainerCMCL": "CMCL: dense InfoNCE on 3 encoder stages, complementary modality views + a full view",
        "nnUNetTrainerCMCL_100epochs": "the default with 100 epochs (nnU-Net's default is 1000)",
        "nnUNetTrainerCMCL_250epochs": "the default with 250 epochs",
        "nnUNetTrainerCMCL_global": "adds the global per-sample term (centred head, momentum encoder, key queue)",
        "nnUNetTrainerCMCL_globalOnly": "the global per-sample term alone",
        "nnUNetTrainerCMCL_single": "one modality per view instead of a complementary partition",
        "nnUNetTrainerCMCL_noFull": "modality views only, no view with every channel",
        "nnUNetTrainerCMCL_bottleneck": "the dense term on the bottleneck only",
        "nnUNetTrainerCMCL_Aug": "one-modality data (CT): views differ by intensity augmentation",
        "nnUNetTrainerCMCL_recon": "reconstruction only through nnU-Net's decoder (MAE-like; the SSL baseline)",
        "nnUNetTrainerCMCL_DAE": "the default CMCL plus reconstruction through nnU-Net's decoder",
        "nnUNetTrainerCMCL_DAE_global": "CMCL plus reconstruction with the global term (the CPU study's hybrid)",
    }),
    ("Fine-tuning", "nnUNetv2_train D C FOLD -tr NAME -pretrained_weights CKPT", {
        "nnUNetTrainerCMCLFinetune": "nnU-Net's schedule; optional frozen encoder; records the source checkpoint",
        "nnUNetTrainerCMCLFinetune_fromRecon": "the same, own results folder, for _recon checkpoints",
        "nnUNetTrainerCMCLFinetune_fromDAE": "the same, own results folder, for _DAE checkpoints",
        "nnUNetTrainerCMCLFinetune_warmup": "a linear warm-up over the first 5 % of iterations",
        "nnUNetTrainerCMCLFinetune_lr1e3": "peak learning rate 1e-3 with the warm-up (nnU-Net's PretrainedTrainer)",
        "nnUNetTrainerCMCLFinetune_scratch": "the default schedule from random weights: a control",
        "nnUNetTrainerCMCLFinetune_warmup_scratch": "_warmup's schedule from random weights: its control",
        "nnUNetTrainerCMCLFinetune_lr1e3_scratch": "_lr1e3's schedule from random weights: its control",
        "nnUNetTrainerCMCLFinetune_modalityDropout": "with p = 0.1 a sample loses a random proper subset of "
                                                     "its modalities (set to 0)",
    }),
    ("Baselines", "nnUNetv2_train D C FOLD -tr NAME", {
        "nnUNetTrainerSeeded": "nnU-Net's default trainer plus the fold's training seed (the study's baseline)",
        "nnUNetTrainerSeeded_modalityDropout": "the seeded baseline with the same modality dropout: "
                                               "nnUNetTrainerCMCLFinetune_modalityDropout's control",
    }),
)


def shim_names(folder: str) -> list[str]:
    """The trainer modules of one folder, by name."""
    return sorted(f[:-3] for f in os.listdir(folder) if f.startswith("nnUNetTrainer") and f.endswith(".py"))


def budget_trainers() -> list[str]:
    return shim_names(os.path.join(trainer_path(), BUDGETS_FOLDER))


def catalog_text() -> str:
    """The grouped listing, public trainers first, budgets apart."""
    width = max(len(name) for _, _, trainers in CATALOG for name in trainers)
    lines = []
    for group, usage, trainers in CATALOG:
        lines.append(f"{group} ({usage}):")
        lines += [f"  {name:<{width}}  {summary}" for name, summary in trainers.items()]
        lines.append("")
    lines.append("Budgets of the CPU study preset (_cpuPreset) and the demo (_demo), in trainers/budgets/; for the "
                 "study and the demo, not for your own runs:")
    lines += [f"  {name}" for name in budget_trainers()]
    return "\n".join(lines)

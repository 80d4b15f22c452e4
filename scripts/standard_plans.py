"""Writes docs/standard_plans.md: CMCL's geometry and pretraining batches on nnU-Net's standard plans.

The plans are nnU-Net's own (default planner, ResEnc M, ResEnc L), made from a BraTS-like fingerprint alone
(``nnunet_cmcl.plans.fingerprints``); the views and dense locations are read from the models the pretraining
trainers build, the batches and memory ratios from ``size_pretraining_batch`` (nnU-Net's feature-map estimate).

    python scripts/standard_plans.py                      # writes docs/standard_plans.md
    python scripts/standard_plans.py -o /tmp/plans.md --num_gpus 2
    python scripts/standard_plans.py --activations        # also measures activations at batch 1 (CPU, minutes)
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import tempfile

import torch
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

from nnunet_cmcl.plans.fingerprints import AMOS_LIKE, BRATS_LIKE, standard_plans
from nnunet_cmcl.plans.pretraining import find_pretraining_trainer, size_pretraining_batch

PRETRAINERS = ("nnUNetTrainerCMCL", "nnUNetTrainerCMCL_global", "nnUNetTrainerCMCL_recon", "nnUNetTrainerCMCL_DAE",
               "nnUNetTrainerCMCL_DAE_global")
CONFIGURATIONS = ("3d_fullres", "2d")
PLANS_LABELS = {"nnUNetPlans": "default (`nnUNetPlans`)", "nnUNetResEncUNetMPlans": "ResEnc M",
                "nnUNetResEncUNetLPlans": "ResEnc L"}
COMMAND = "python scripts/standard_plans.py"


def _shape(values) -> str:
    values = list(values)
    return f"{values[0]}^{len(values)}" if len(set(values)) == 1 else " x ".join(str(v) for v in values)


def built_model(trainer_name: str, plans: dict, configuration: str, dataset_json: dict):
    """(trainer, the CMCL model its build_network_architecture makes); on the meta device no weights are made."""
    trainer_class = find_pretraining_trainer(trainer_name)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's trainer prints its device
        # nnU-Net's trainer takes (and removes) this flag from the plans that nnUNetv2_train hands it
        trainer = trainer_class({**plans, "continue_training": False}, configuration, 0, dataset_json,
                                torch.device("cpu"))
    manager, conf = trainer.plans_manager, trainer.configuration_manager
    channels = determine_num_input_channels(manager, conf, dataset_json)
    heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    with torch.device("meta"):
        model = trainer.build_network_architecture(manager, conf, channels, heads, False)
    return trainer, model


def dense_locations(model) -> str:
    """Per sample: the bottleneck's locations, then each dense stage's above it (fine to coarse is right to left)."""
    if "dense" not in model.heads:
        return "none"
    counts = [model.sampler.num_locations]
    counts += [getattr(grid, "num_locations", model.sampler.num_locations) for grid in model.stage_grids]
    return " / ".join(str(c) for c in counts)


def geometry_rows(plans: dict[str, dict], dataset_json: dict, trainer_name: str) -> list[str]:
    rows = []
    for plans_name, p in plans.items():
        for configuration in CONFIGURATIONS:
            conf = p["configurations"][configuration]
            _, model = built_model(trainer_name, p, configuration, dataset_json)
            s = model.sampler
            cells = [PLANS_LABELS.get(plans_name, plans_name), configuration, _shape(conf["patch_size"]),
                     conf["batch_size"], _shape(s.patch_bottleneck), s.num_views, _shape(s.crop_size),
                     _shape(s.view_bottleneck), dense_locations(model)]
            rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return rows


def batch_rows(plans: dict[str, dict], dataset_json: dict, trainers: tuple[str, ...], num_gpus: int) -> list[str]:
    rows = []
    for plans_name, p in plans.items():
        for configuration in CONFIGURATIONS:
            cells = []
            for name in trainers:
                sized = size_pretraining_batch(p, configuration, dataset_json, find_pretraining_trainer(name),
                                               num_gpus=num_gpus)
                cells.append(f"{sized.batch} ({sized.memory_ratio:.3f}x)")
            target = p["configurations"][configuration]["batch_size"]
            rows.append(f"| {PLANS_LABELS.get(plans_name, plans_name)} | {configuration} | {target} | "
                        + " | ".join(cells) + " |")
    return rows


def activations(plans: dict, dataset_json: dict, trainers: tuple[str, ...]) -> list[str]:
    """Activations autograd keeps for backward in one train_step at batch 1 on the CPU (bench_step's count):
    nnU-Net's trainer (deep supervision, as it trains) and each pretrainer, on the same random patch."""
    import sys

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import saved_for_backward_bytes

    configuration = "3d_fullres"
    conf = plans["configurations"][configuration]
    one = {**plans, "configurations": {**plans["configurations"], configuration: {**conf, "batch_size": 1}}}
    rows, vanilla = [], None
    with tempfile.TemporaryDirectory() as root:
        # initialize() asks the preprocessed data folder for its file format: one empty Blosc2 file answers
        os.environ.update(nnUNet_preprocessed=root, nnUNet_compile="false")
        data_folder = os.path.join(root, plans["dataset_name"], conf["data_identifier"])
        os.makedirs(data_folder)
        open(os.path.join(data_folder, "case.b2nd"), "w").close()
        for name in ("nnUNetTrainer",) + trainers:
            cls = nnUNetTrainer if name == "nnUNetTrainer" else find_pretraining_trainer(name)
            with contextlib.redirect_stdout(io.StringIO()):
                trainer = cls({**one, "continue_training": False}, configuration, 0, dataset_json,
                              torch.device("cpu"))
                trainer.print_to_log_file = lambda *args, **kwargs: None
                trainer.initialize()
            torch.manual_seed(0)
            data = torch.randn(1, trainer.num_input_channels, *conf["patch_size"])
            scales = trainer._get_deep_supervision_scales() or [[1.0] * len(conf["patch_size"])]
            # every voxel inside the image (no -1 marker), background label: labels are not what is measured
            target = [torch.zeros(1, 1, *[round(p * s) for p, s in zip(conf["patch_size"], scale)])
                      for scale in scales]
            saved = saved_for_backward_bytes(trainer, {"data": data, "target": target, "keys": ["case"]})
            vanilla = vanilla or saved
            estimate = 1.0 if cls is nnUNetTrainer else size_pretraining_batch(
                plans, configuration, dataset_json, cls).per_sample
            rows.append(f"| `{name}` | {saved / 2**20:.0f} MiB | {saved / vanilla:.2f}x | {estimate:.2f}x |")
            del trainer  # its activations and weights go before the next trainer's are made
    return rows


def page(num_gpus: int, measure: bool) -> str:
    plans, dataset_json = standard_plans(BRATS_LIKE)
    b = BRATS_LIKE
    lines = [
        "# CMCL on nnU-Net's standard plans", "", "[Back to the README](../README.md)", "",
        f"Generated on {datetime.date.today().isoformat()} by `{COMMAND}"
        + (f" --num_gpus {num_gpus}" if num_gpus > 1 else "") + (" --activations" if measure else "") + "`.", "",
        f"The plans are nnU-Net's own planners' (`ExperimentPlanner`, `nnUNetPlannerResEncM`, `nnUNetPlannerResEncL`) "
        f"for a BraTS-like dataset fingerprint: {b.num_cases} cases of {' x '.join(map(str, b.shape))} voxels at "
        f"{b.spacing[0]:g} mm, {len(b.channel_names)} channels ({', '.join(b.channel_names.values())}), made without "
        f"images (`nnunet_cmcl.plans.fingerprints`). The views and dense locations are read from the models that "
        f"the pretraining trainers build on those plans.", "",
        "## Views and dense locations (`nnUNetTrainerCMCL`)", "",
        "Dense locations per sample: the bottleneck's, then each dense stage's above it.", "",
        "| plans | configuration | patch | batch | bottleneck | views | CMCL crop | view bottleneck | "
        "dense locations |",
        "|---|---|---|---|---|---|---|---|---|",
        *geometry_rows(plans, dataset_json, "nnUNetTrainerCMCL"), "",
        "## Pretraining batch and memory", "",
        f"Per pretrainer, the batch of the pretraining plans that `nnunet-cmcl pretrain-plans -tr PRETRAINER"
        + (f" -num_gpus {num_gpus}" if num_gpus > 1 else "") + "` derives (`size_pretraining_batch`), and in "
        "parentheses the feature maps the step holds on one GPU at that batch against the vanilla step's at the plans' "
        "batch, by nnU-Net's estimate (`compute_conv_feature_map_size`, which nnU-Net sizes its batch by). The goal "
        "is at most 1.00x on every row: then every pretraining fits the GPU the plans were made for. The batch grows "
        "(at most 4x) where the step frees memory, and shrinks where the step runs the decoder on every view too "
        "(`_recon`, `_DAE`, `_DAE_global`). A ratio well below 1 (a reconstructing step at batch 1) means that one "
        "sample more would pass it. The momentum encoder of `_global` runs without gradients, so it keeps no "
        "activations and is not counted. The dense loss's logits are counted with the feature maps "
        "(`dense_logits_per_sample`; a float32 logit kept for backward as about 1.07 elements of the estimate, "
        "measured): each dense anchor is scored against at most `dense_max_candidates` (4096) location embeddings, "
        "its group of samples'. Unbounded, a 2d batch of 132 samples x 3 views x 64 locations scores every anchor "
        "against all 25,344 and keeps about 4.5 GB of logits for backward, more than the whole vanilla 2d step; "
        "bounded, 0.88 GB at that batch. In 3d_fullres the bound is not reached (4 samples x 3 views x 64 = 768) and "
        "the logits are under 1 % of the step.", "",
        "| plans | configuration | vanilla batch | " + " | ".join(f"`{t}`" for t in PRETRAINERS) + " |",
        "|---|---|---|" + "---|" * len(PRETRAINERS),
        *batch_rows(plans, dataset_json, PRETRAINERS, num_gpus), "",
    ]
    amos_plans, amos_json = standard_plans(AMOS_LIKE)
    a = AMOS_LIKE
    lines += [
        "### One-modality CT (`nnUNetTrainerCMCL_Aug`)", "",
        f"An AMOS-like abdominal CT fingerprint ({a.num_cases} cases of {' x '.join(map(str, a.shape))} voxels at "
        f"{' x '.join(f'{s:g}' for s in a.spacing)} mm, 1 channel; an approximation, not AMOS' own fingerprint).", "",
        "| plans | configuration | vanilla batch | `nnUNetTrainerCMCL_Aug` |", "|---|---|---|---|",
        *batch_rows(amos_plans, amos_json, ("nnUNetTrainerCMCL_Aug",), num_gpus), "",
    ]
    if measure:
        default = plans["nnUNetPlans"]
        lines += [
            "## Measured activations (3d_fullres, default plans, batch 1, CPU)", "",
            "The activations autograd keeps for backward in one `train_step` of a random patch (parameters left "
            "out, each storage once; `saved_tensors_hooks`, as `scripts/bench_step.py` counts them), the same on any "
            "device. nnU-Net's estimate above counts convolution outputs only.", "",
            "| trainer | saved for backward | against `nnUNetTrainer` | nnU-Net's estimate, per sample |",
            "|---|---|---|---|",
            *activations(default, dataset_json, PRETRAINERS), "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", default=os.path.join(os.path.dirname(__file__), "..", "docs", "standard_plans.md"),
                        help="output page (default docs/standard_plans.md)")
    parser.add_argument("--num_gpus", type=int, default=1, help="GPUs the pretraining batches are split over")
    parser.add_argument("--activations", action="store_true",
                        help="also measure the activations at batch 1 on the CPU (3d_fullres, default plans)")
    args = parser.parse_args()
    # nnU-Net's trainers make their output folder when built (nnUNet_results is read when used): a temporary one
    with tempfile.TemporaryDirectory() as results:
        os.environ["nnUNet_results"] = results
        text = page(args.num_gpus, args.activations)
    with open(args.o, "w") as f:
        f.write(text)
    print(text)
    print(f"written: {os.path.normpath(args.o)}")


if __name__ == "__main__":
    main()

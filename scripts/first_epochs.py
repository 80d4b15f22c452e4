"""The first epochs of two segmentation runs side by side, and what a pretrained encoder brings into them.

For segmentation runs of one dataset, configuration and budget (a baseline and fine-tuned runs), prints per epoch each
class's pseudo Dice (nnU-Net's validation-patch Dice, from the checkpoint's log) and the train loss, and, for the
pretrained checkpoint against nnU-Net's own initialisation of the same network, per encoder stage: the RMS of the
convolution weights and the mean scale and shift of the instance norms. A weight RMS far from nnU-Net's init
changes the effective step of SGD on a normalised layer (about lr / |w|^2), which is why it is listed.

    python scripts/first_epochs.py --run nnU-Net=RESULTS/D/nnUNetTrainerSeeded_demo__nnUNetPlans__3d_fullres/fold_5 \\
        --run CMCL=RESULTS/D/nnUNetTrainerCMCLFinetune_demo__nnUNetPlans__3d_fullres/fold_5 \\
        --pretrained RESULTS/D/nnUNetTrainerCMCL_demo__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth \\
        --png docs/first_epochs.png
"""
from __future__ import annotations

import argparse
import os
import re

import torch

from nnunet_cmcl.checkpoints import load_checkpoint_safely


def read_curves(fold_folder: str) -> dict:
    """Per-epoch pseudo Dice per class and train loss from the fold's newest checkpoint."""
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        path = os.path.join(fold_folder, name)
        if os.path.isfile(path):
            log = load_checkpoint_safely(path)["logging"]
            return {"dice": log["dice_per_class_or_region"], "train_loss": log["train_losses"],
                    "val_loss": log["val_losses"]}
    raise SystemExit(f"{fold_folder} holds no checkpoint_final.pth or checkpoint_latest.pth")


def initial_encoder(fold_folder: str) -> dict:
    """nnU-Net's own initialisation of the fine-tuned run's network (get_network_from_plans applies the
    architecture's He init, as nnU-Net's trainer does)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(load_json(os.path.join(fold_folder, "..", "plans.json")))
    dataset_json = load_json(os.path.join(fold_folder, "..", "dataset.json"))
    configuration = os.path.basename(os.path.dirname(os.path.abspath(fold_folder))).split("__")[-1]
    manager = plans.get_configuration(configuration)
    label_manager = plans.get_label_manager(dataset_json)
    torch.manual_seed(0)
    network = get_network_from_plans(manager.network_arch_class_name, manager.network_arch_init_kwargs,
                                     manager.network_arch_init_kwargs_req_import, len(dataset_json["channel_names"]),
                                     label_manager.num_segmentation_heads, allow_init=True, deep_supervision=True)
    return {k: v for k, v in network.state_dict().items() if k.startswith("encoder.")}


def stage_of(key: str) -> str:
    match = re.match(r"encoder\.stages\.(\d+)", key)
    return match.group(1) if match else "stem"


def encoder_scales(weights: dict) -> dict[str, dict[str, float]]:
    """Per encoder stage: conv weight RMS, mean norm scale, mean |norm shift|."""
    out: dict[str, dict[str, list]] = {}
    for key, value in weights.items():
        if not key.startswith("encoder.") or not value.is_floating_point():
            continue
        stage = out.setdefault(stage_of(key), {"conv_rms": [], "norm_scale": [], "norm_shift": []})
        if value.dim() >= 3:  # a convolution kernel
            stage["conv_rms"].append(value.float().pow(2).mean().sqrt().item())
        elif key.endswith("norm.weight"):
            stage["norm_scale"].append(value.float().mean().item())
        elif key.endswith("norm.bias"):
            stage["norm_shift"].append(value.float().abs().mean().item())
    return {s: {k: sum(v) / len(v) if v else float("nan") for k, v in d.items()} for s, d in out.items()}


def print_curves(curves: dict[str, dict], epochs: int) -> None:
    names = list(curves)
    n_classes = len(next(iter(curves.values()))["dice"][0])
    header = ["epoch"] + [f"{n} class {c + 1}" for n in names for c in range(n_classes)] + \
        [f"{n} train loss" for n in names]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for e in range(min(epochs, *(len(c["dice"]) for c in curves.values()))):
        cells = [str(e)] + [f"{curves[n]['dice'][e][c]:.3f}" for n in names for c in range(n_classes)] + \
            [f"{curves[n]['train_loss'][e]:.3f}" for n in names]
        print("| " + " | ".join(cells) + " |")


def class_names(fold_folder: str) -> dict[int, str]:
    """Foreground label value -> name, from the run's dataset.json."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    labels = load_json(os.path.join(fold_folder, "..", "dataset.json"))["labels"]
    return {v: k for k, v in labels.items() if isinstance(v, int) and v > 0}


def plot_curves(curves: dict[str, dict], path: str, names: dict[int, str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_classes = len(next(iter(curves.values()))["dice"][0])
    fig, axes = plt.subplots(1, n_classes, figsize=(3.2 * n_classes, 2.8), sharey=True)
    # one colour per arm (the label's first word), one line style per run of it (e.g. its seeds)
    arm_of = {name: name.split(" ")[0] for name in curves}
    arms = list(dict.fromkeys(arm_of.values()))
    order = list(arm_of.values())
    style = {name: ["-", "--", ":", "-."][order[:i].count(arm_of[name]) % 4] for i, name in enumerate(curves)}
    for c, ax in enumerate(axes):
        for name, curve in curves.items():
            ax.plot([d[c] for d in curve["dice"]], marker="o", ms=3, label=name,
                    color=f"C{arms.index(arm_of[name])}", linestyle=style[name])
        ax.set_title(names.get(c + 1, f"class {c + 1}"))
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("pseudo Dice")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, action="append", metavar="LABEL=FOLDER",
                        help="a segmentation run's fold folder and its label in the table and plot (repeatable)")
    parser.add_argument("--pretrained", help="the pretrained checkpoint, for the encoder scales")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--png")
    args = parser.parse_args()
    folders = dict(item.split("=", 1) for item in args.run)
    curves = {label: read_curves(folder) for label, folder in folders.items()}
    print_curves(curves, args.epochs)
    if args.png:
        plot_curves(curves, args.png, class_names(next(iter(folders.values()))))
        print(f"wrote {args.png}")
    if args.pretrained:
        init = encoder_scales(initial_encoder(next(iter(folders.values()))))
        pretrained = encoder_scales(load_checkpoint_safely(args.pretrained)["network_weights"])
        print("\n| stage | conv RMS init | conv RMS pretrained | norm scale init | pretrained | |norm shift| init "
              "| pretrained |\n|---|---|---|---|---|---|---|")
        for stage, values in init.items():
            p = pretrained.get(stage, {})
            print(f"| {stage} | {values['conv_rms']:.4f} | {p.get('conv_rms', float('nan')):.4f} | "
                  f"{values['norm_scale']:.3f} | {p.get('norm_scale', float('nan')):.3f} | "
                  f"{values['norm_shift']:.3f} | {p.get('norm_shift', float('nan')):.3f} |")


if __name__ == "__main__":
    main()

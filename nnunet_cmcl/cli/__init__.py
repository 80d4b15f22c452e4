"""The ``nnunet-cmcl`` command: argument parsing only. Each command has one ``_add_<command>`` function that
declares its arguments (``add_<command>`` for those imported from study_commands and missing_commands) and one
``_cmd_<command>`` that hands them to the library; the work lives in the library."""
from __future__ import annotations

import argparse
import os
import sys

from nnunet_cmcl import __version__
from nnunet_cmcl.cli.arguments import check_paths, dataset_arguments, pretraining_trainer_argument, target_arguments
from nnunet_cmcl.cli.missing_commands import add_evaluate_missing, add_predict
from nnunet_cmcl.cli.study_commands import add_demo, add_experiment, add_study
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.train import add_arguments as train_arguments

# ---------------------------------------------------------------- trainers and checkpoints

def _add_trainer_path(sub) -> None:
    sub.add_parser("trainer-path", help="print the folder to put in nnUNet_extTrainer").set_defaults(
        func=_cmd_trainer_path)


def _cmd_trainer_path(args: argparse.Namespace) -> int:
    from nnunet_cmcl.naming import trainer_path

    print(trainer_path())
    return 0


def _add_trainers(sub) -> None:
    sub.add_parser("trainers", help="list the trainers this plugin adds to nnU-Net, grouped, with what each changes").set_defaults(
        func=_cmd_trainers)


def _cmd_trainers(args: argparse.Namespace) -> int:
    from nnunet_cmcl.trainer_catalog import catalog_text

    print(catalog_text())
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show a checkpoint's trainer, plans, channels, CMCL config and metrics")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from nnunet_cmcl.checkpoints import load_checkpoint_safely
    from nnunet_cmcl.transfer.handoff import describe

    print("\n".join(describe(load_checkpoint_safely(args.checkpoint))))
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="test-load a checkpoint into a target dataset's network; list what transfers")
    target_arguments(p)
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from nnunet_cmcl.checkpoints import load_checkpoint_safely
    from nnunet_cmcl.transfer.handoff import build_target_network, check_transfer

    checkpoint = load_checkpoint_safely(args.checkpoint)
    summary, problems = check_transfer(checkpoint, *build_target_network(args.d, args.c, args.p))
    print("\n".join(summary))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s): stock -pretrained_weights would fail", file=sys.stderr)
        return 1
    print("OK: stock -pretrained_weights loads this checkpoint")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="adapt a checkpoint to a target dataset (channels mapped by name)")
    target_arguments(p)
    p.add_argument("-o", required=True, help="output .pth")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from nnunet_cmcl.checkpoints import load_checkpoint_safely
    from nnunet_cmcl.transfer.handoff import build_target_network, export

    checkpoint = load_checkpoint_safely(args.checkpoint)
    print("\n".join(export(args.checkpoint, checkpoint, *build_target_network(args.d, args.c, args.p), args.o)))
    print(f"wrote {args.o}: use it with nnUNetv2_train {args.d} {args.c} FOLD -pretrained_weights {args.o}")
    return 0


# ---------------------------------------------------------------- pretraining data and plans

def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="preprocess a pretraining dataset (labels optional) with a target's plans")
    p.add_argument("-s", required=True, help="target dataset (whose plans are used; fine-tuned later)")
    p.add_argument("-t", required=True, help="pretraining dataset, in nnUNet_raw, same channels as the target")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default=None, help="plans identifier of the target (default nnUNetPlans)")
    p.add_argument("-pl", default=None, help=argparse.SUPPRESS)  # deprecated alias of -p (nnU-Net's -pl is a planner)
    p.add_argument("-np", type=int, default=4, help="preprocessing processes (default 4)")
    pretraining_trainer_argument(p)
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from nnunet_cmcl.transfer.prepare import prepare

    plans = args.p
    if args.pl is not None:
        if plans is not None and plans != args.pl:
            raise CMCLInputError(f"-p {plans} and -pl {args.pl} disagree; give the plans identifier once, with -p")
        print("nnunet-cmcl prepare: warning: -pl is deprecated, give the plans identifier with -p (nnU-Net's -pl "
              "names a planner)", file=sys.stderr)
        plans = args.pl
    command = prepare(args.s, args.t, args.c, plans or "nnUNetPlans", args.np, args.tr, args.num_gpus)
    print(f"[prepare] done. Pretrain with:\n  {command}")
    return 0


def _add_pretrain_plans(sub) -> None:
    p = sub.add_parser(
        "pretrain-plans", help="write the plans for pretraining with a trainer: the dataset's plans with a batch "
                               "sized for its step",
        description="Writes <plans><suffix of -tr> (nnUNetPlans_CMCL for nnUNetTrainerCMCL, nnUNetPlans_CMCL_DAE for "
                    "nnUNetTrainerCMCL_DAE, ...) next to the dataset's plans: the same plans, architecture and "
                    "preprocessed data, with the -c configuration's batch sized for that trainer's pretraining step. "
                    "The batch is the largest, at most 4x the plans' batch and divisible by -num_gpus, whose step "
                    "holds at most the feature maps of the vanilla step at the plans' batch on each GPU (nnU-Net's "
                    "compute_conv_feature_map_size, which nnU-Net sizes its batch by), so the pretraining fits the GPU "
                    "the plans were made for: larger for an encoder-only step, smaller for one that runs the decoder "
                    "too. Prints the report and the nnUNetv2_train command that pretrains with them.")
    dataset_arguments(p, "dataset name or id (preprocessed)")
    pretraining_trainer_argument(p)
    p.set_defaults(func=_cmd_pretrain_plans)


def _cmd_pretrain_plans(args: argparse.Namespace) -> int:
    from nnunet_cmcl.transfer.prepare import pretrain_plans

    report, command = pretrain_plans(args.d, args.c, args.p, args.tr, args.num_gpus)
    print(report)
    print(f"pretrain with: {command}")
    return 0


# ---------------------------------------------------------------- training beyond one machine

def _add_train(sub) -> None:
    p = sub.add_parser("train", help="nnUNetv2_train for ranks started by torchrun: several machines, or the CPU",
                       description="nnUNetv2_train's arguments (without -num_gpus) for ranks that torchrun started: "
                                   "`torchrun --nnodes N --nproc-per-node G ... -m nnunet_cmcl.train D C F -tr T`, or "
                                   "this command under torchrun. Each rank on cuda:LOCAL_RANK (NCCL) or, with -device "
                                   "cpu, on the CPU (gloo); rank 0 writes. Without torchrun: nnUNetv2_train with one "
                                   "process. See docs/multinode.md.")
    train_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from nnunet_cmcl.train import run

    return run(args)


# ---------------------------------------------------------------- the study

def _add_splits(sub) -> None:
    p = sub.add_parser("splits", help="add low-label folds to splits_final.json (subsets of existing folds' "
                                      "training sets)")
    p.add_argument("-d", required=True, help="dataset name or id (preprocessed, with splits_final.json)")
    p.add_argument("--fractions", type=float, nargs="+", required=True, help="training fractions, e.g. 0.1 0.25")
    p.add_argument("--seed", type=int, default=0, help="subset seed (default 0)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="source folds (default: every original fold)")
    p.set_defaults(func=_cmd_splits)


def _cmd_splits(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.splits import describe_folds, write_dataset_label_fraction_folds

    print("\n".join(describe_folds(write_dataset_label_fraction_folds(args.d, args.fractions, args.seed,
                                                                      args.folds))))
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="paired comparison of two trainers on the same folds: table, plot, statistics")
    dataset_arguments(p, "dataset name or id")
    p.add_argument("--baseline", default="nnUNetTrainer", help="baseline trainer (default nnUNetTrainer)")
    p.add_argument("--candidate", default="nnUNetTrainerCMCLFinetune", help="candidate trainer")
    p.add_argument("--folds", nargs="+", default=None, help="folds (default: all folds both trainers have)")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("-o", default=None, help="output folder (default: nnUNet_results/<dataset>/cmcl_comparisons/...)")
    p.add_argument("--validation", default="validation",
                   help="which evaluation of each fold: nnU-Net's 'validation' (default) or e.g. "
                        "'validation_missing_T2' written by evaluate-missing")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from nnunet_cmcl.evaluation.comparison_report import compare_and_report

    _print_comparison(*compare_and_report(args.d, args.c, args.p, args.baseline, args.candidate, args.folds,
                                          args.bootstrap, args.seed, args.validation, args.o))
    return 0


def _print_comparison(result: dict, paths: dict[str, str]) -> None:
    from nnunet_cmcl.evaluation.comparison_report import format_table

    print(format_table(result))
    print(f"written: {', '.join(paths.values())}")


# ---------------------------------------------------------------- data and the demo

def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a built-in multi-modal dataset in nnUNet_raw format (no download)")
    p.add_argument("kind", choices=("phantom", "brain", "brats"),
                   help="phantom: ellipsoids, structures visible in one modality only; brain: real MNI152 anatomy "
                        "(shipped by nilearn), simulated subjects and T2/FLAIR contrasts; brats: gliomas on that "
                        "anatomy in FLAIR, T1w, t1gd, T2w with nnU-Net's BraTS regions")
    p.add_argument("-o", default=None, help="nnUNet_raw-style folder to write into (default $nnUNet_raw)")
    p.add_argument("--id", type=int, required=True, help="dataset id (1-999), must be unused in the folder")
    p.add_argument("--name", default=None, help="dataset name (default CMCLPhantom / CMCLBrain / CMCLBraTS)")
    p.add_argument("--cases", type=int, default=None, help="number of cases (default 12; 24 for brats)")
    p.add_argument("--seed", type=int, default=0, help="case i is drawn from seed (seed, i) (default 0)")
    p.add_argument("--modalities", nargs="+", default=None,
                   help="phantom channel names (default T1 T2); channel 0 shows structure 1, channel 1 structure 2")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="phantom voxel spacing in mm, e.g. 3 1 1 for anisotropic data (default 1 1 1)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="image size in voxels (default 40 40 40 for phantom, 48 56 48 for brain and brats)")
    p.add_argument("--no-labels", action="store_true", help="images only (an unlabeled pretraining dataset)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_cmcl.data.writers import write_dataset

    output = args.o or os.environ.get("nnUNet_raw")
    if not output:
        raise CMCLInputError("no output folder: pass -o FOLDER or set nnUNet_raw")
    cases = args.cases if args.cases is not None else (24 if args.kind == "brats" else 12)
    folder = write_dataset(args.kind, output, args.id, name=args.name, num_cases=cases, seed=args.seed,
                           with_labels=not args.no_labels, shape=args.shape, modalities=args.modalities,
                           spacing=args.spacing)
    print(f"wrote {folder}\nnext: nnUNetv2_plan_and_preprocess -d {args.id} --verify_dataset_integrity")
    return 0


def _add_check_data(sub) -> None:
    p = sub.add_parser("check-data", help="look for NaN/Inf voxels in a raw dataset's images (before preprocessing)")
    p.add_argument("-d", required=True, help="dataset name or id in nnUNet_raw")
    p.add_argument("-np", type=int, default=4, help="reading processes (default 4)")
    p.set_defaults(func=_cmd_check_data)


def _cmd_check_data(args: argparse.Namespace) -> int:
    from nnunet_cmcl.data.checks import check_dataset_finite

    folder, cases = check_dataset_finite(args.d, args.np)
    print(f"OK: the images of all {cases} cases of {folder} are finite")
    return 0


# ---------------------------------------------------------------- the command

COMMANDS = (_add_trainer_path, _add_trainers, _add_inspect, _add_verify, _add_export, _add_prepare,
            _add_pretrain_plans, _add_train, _add_splits, _add_compare, add_evaluate_missing, add_predict,
            add_experiment, _add_synth, _add_check_data, add_demo, add_study)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-cmcl",
        description="Cross-modal contrastive pretraining for nnU-Net v2. Make the trainers visible to nnU-Net with "
                    "`export nnUNet_extTrainer=$(nnunet-cmcl trainer-path)`, then pretrain with "
                    "`nnUNetv2_train D C all -tr nnUNetTrainerCMCL`.")
    parser.add_argument("--version", action="version", version=f"nnunet-cmcl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args.command)
        return args.func(args)
    except CMCLInputError as e:
        if os.environ.get("NNUNET_CMCL_DEBUG"):
            raise
        print(f"nnunet-cmcl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

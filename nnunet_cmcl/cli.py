"""The ``nnunet-cmcl`` command: argument parsing only. Each command has one ``_add_<command>`` function that
declares its arguments and one ``_cmd_<command>`` that hands them to the library; the work lives in the library."""
from __future__ import annotations

import argparse
import os
import sys

from nnunet_cmcl import __version__
from nnunet_cmcl.errors import CMCLInputError

DEVICES = ("cuda", "cpu", "mps")


# ---------------------------------------------------------------- arguments shared by several commands

def _dataset_arguments(p: argparse.ArgumentParser, dataset_help: str) -> None:
    p.add_argument("-d", required=True, help=dataset_help)
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")


def _target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint_*.pth")
    p.add_argument("-d", required=True, help="target dataset name or id")
    p.add_argument("-c", required=True, help="target configuration, e.g. 3d_fullres")
    p.add_argument("-p", default="nnUNetPlans", help="target plans identifier (default nnUNetPlans)")


def _pretraining_trainer_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-tr", default="nnUNetTrainerCMCL",
                   help="pretraining trainer the plans are sized for (default nnUNetTrainerCMCL; "
                        "nnUNetTrainerCMCL_DAE also runs the decoder, so it gets a smaller batch)")


def _device_argument(p: argparse.ArgumentParser, default: str = "cuda") -> None:
    p.add_argument("-device", "--device", default=default, choices=DEVICES)


# ---------------------------------------------------------------- trainers and checkpoints

def _add_trainer_path(sub) -> None:
    sub.add_parser("trainer-path", help="print the folder to put in nnUNet_extTrainer").set_defaults(
        func=_cmd_trainer_path)


def _cmd_trainer_path(args: argparse.Namespace) -> int:
    from nnunet_cmcl.naming import trainer_path

    print(trainer_path())
    return 0


def _add_trainers(sub) -> None:
    sub.add_parser("trainers", help="list the trainer classes this plugin adds to nnU-Net").set_defaults(
        func=_cmd_trainers)


def _cmd_trainers(args: argparse.Namespace) -> int:
    from nnunet_cmcl.naming import trainer_path

    print("\n".join(sorted(f[:-3] for f in os.listdir(trainer_path())
                           if f.startswith("nnUNetTrainer") and f.endswith(".py"))))
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
    _target_arguments(p)
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
    _target_arguments(p)
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
    _pretraining_trainer_argument(p)
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
    command = prepare(args.s, args.t, args.c, plans or "nnUNetPlans", args.np, args.tr)
    print(f"[prepare] done. Pretrain with:\n  {command}")
    return 0


def _add_pretrain_plans(sub) -> None:
    p = sub.add_parser("pretrain-plans", help="write <plans>_CMCL: the target's plans with a batch sized for CMCL")
    _dataset_arguments(p, "dataset name or id (preprocessed)")
    _pretraining_trainer_argument(p)
    p.set_defaults(func=_cmd_pretrain_plans)


def _cmd_pretrain_plans(args: argparse.Namespace) -> int:
    from nnunet_cmcl.transfer.prepare import pretrain_plans

    report, command = pretrain_plans(args.d, args.c, args.p, args.tr)
    print(report)
    print(f"pretrain with: {command}")
    return 0


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
    _dataset_arguments(p, "dataset name or id")
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
    from nnunet_cmcl.study.report import compare_and_report

    _print_comparison(*compare_and_report(args.d, args.c, args.p, args.baseline, args.candidate, args.folds,
                                          args.bootstrap, args.seed, args.validation, args.o))
    return 0


def _print_comparison(result: dict, paths: dict[str, str]) -> None:
    from nnunet_cmcl.study.report import format_table

    print(format_table(result))
    print(f"written: {', '.join(paths.values())}")


def _add_evaluate_missing(sub) -> None:
    p = sub.add_parser("evaluate-missing", help="a fold's validation with one modality removed (nnU-Net's predictor "
                                                "and evaluator)")
    _dataset_arguments(p, "dataset name or id")
    p.add_argument("-tr", required=True, help="trainer")
    p.add_argument("-f", type=int, required=True, help="fold")
    p.add_argument("--drop", required=True, help="modality (channel name) to remove, e.g. T2")
    _device_argument(p)
    p.set_defaults(func=_cmd_evaluate_missing)


def _cmd_evaluate_missing(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.missing import evaluate_missing

    summary = evaluate_missing(args.d, args.c, args.tr, args.f, args.drop, args.p, args.device)
    print(f"written {summary}; compare trainers on it with --validation validation_missing_{args.drop}")
    return 0


def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="the whole study: per training seed, pretraining per fold on its training "
                                          "images, then every arm per fold and label regime, then the report "
                                          "(skips finished runs, resumes stopped ones)")
    _dataset_arguments(p, "dataset name or id (planned and preprocessed)")
    p.add_argument("--folds", type=int, nargs="+", default=[0], help="folds (default 0)")
    p.add_argument("--fractions", type=float, nargs="+", default=None,
                   help="label fractions, 1 = the whole fold (default 1 unless --labeled is given)")
    p.add_argument("--labeled", type=int, nargs="+", default=None,
                   help="label regimes as numbers of labeled training cases (e.g. 2 4 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label-fraction subsets (default 0)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="repeat every training run once per seed (seeded trainers; e.g. 0 1 2)")
    p.add_argument("--pretrainer", default="nnUNetTrainerCMCL")
    p.add_argument("--finetuner", default="nnUNetTrainerCMCLFinetune")
    p.add_argument("--baseline", default="nnUNetTrainer",
                   help="the arm the others are compared with (default nnUNetTrainer; nnUNetTrainerSeeded with "
                        "--train-seeds)")
    p.add_argument("--control", default=None,
                   help="a schedule-matched scratch control arm, e.g. nnUNetTrainerCMCLFinetune_scratch")
    p.add_argument("--arm", nargs=3, action="append", default=[], metavar=("LABEL", "PRETRAINER", "FINETUNER"),
                   help="a further pretrained arm, e.g. reconstruction nnUNetTrainerCMCL_recon "
                        "nnUNetTrainerCMCLFinetune_fromRecon (repeatable)")
    _device_argument(p)
    p.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.experiment import default_arms, report_experiment, run_experiment

    baseline = args.baseline
    if args.train_seeds and baseline == "nnUNetTrainer":  # the default: nnU-Net's trainer reads no seed
        baseline = "nnUNetTrainerSeeded"
    arms = default_arms(args.pretrainer, args.finetuner, baseline, args.control, [tuple(a) for a in args.arm])
    name, runs = run_experiment(args.d, args.c, args.p, args.folds, args.fractions, args.seed, arms, args.device,
                                args.train_seeds, args.labeled)
    print(report_experiment(name, args.c, args.p, runs, arms))
    return 0


# ---------------------------------------------------------------- data and the demo

def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a built-in multi-modal dataset in nnUNet_raw format (no download)")
    p.add_argument("kind", choices=("phantom", "brain"),
                   help="phantom: ellipsoids, structures visible in one modality only; brain: real MNI152 anatomy "
                        "(shipped by nilearn), simulated subjects and T2/FLAIR contrasts")
    p.add_argument("-o", default=None, help="nnUNet_raw-style folder to write into (default $nnUNet_raw)")
    p.add_argument("--id", type=int, required=True, help="dataset id (1-999), must be unused in the folder")
    p.add_argument("--name", default=None, help="dataset name (default CMCLPhantom / CMCLBrain)")
    p.add_argument("--cases", type=int, default=12, help="number of cases (default 12)")
    p.add_argument("--seed", type=int, default=0, help="case i is drawn from seed (seed, i) (default 0)")
    p.add_argument("--modalities", nargs="+", default=None,
                   help="phantom channel names (default T1 T2); channel 0 shows structure 1, channel 1 structure 2")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="phantom voxel spacing in mm, e.g. 3 1 1 for anisotropic data (default 1 1 1)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="image size in voxels (default 40 40 40 for phantom, 48 56 48 for brain)")
    p.add_argument("--no-labels", action="store_true", help="images only (an unlabeled pretraining dataset)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_cmcl.data.synthetic import write_dataset

    output = args.o or os.environ.get("nnUNet_raw")
    if not output:
        raise CMCLInputError("no output folder: pass -o FOLDER or set nnUNet_raw")
    folder = write_dataset(args.kind, output, args.id, name=args.name, num_cases=args.cases, seed=args.seed,
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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="from nothing to a comparison on built-in data, on the CPU (about 20 min)")
    p.add_argument("--workdir", default="cmcl_demo", help="folder for nnU-Net's data and results (default cmcl_demo)")
    p.add_argument("--kind", default="brain", choices=("brain", "phantom"), help="built-in dataset (default brain)")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.25, help="label fraction of fold 0 (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.demo import run_demo

    run_demo(args.workdir, args.kind, args.cases, args.fraction, args.seed, args.device)
    return 0


# ---------------------------------------------------------------- the command

COMMANDS = (_add_trainer_path, _add_trainers, _add_inspect, _add_verify, _add_export, _add_prepare,
            _add_pretrain_plans, _add_splits, _add_compare, _add_evaluate_missing, _add_experiment, _add_synth,
            _add_check_data, _add_demo)

# nnU-Net's folders each command reads or writes, checked before any work
NEEDED_PATHS = {"verify": ("nnUNet_preprocessed",), "export": ("nnUNet_preprocessed",),
                "prepare": ("nnUNet_raw", "nnUNet_preprocessed"), "pretrain-plans": ("nnUNet_preprocessed",),
                "splits": ("nnUNet_preprocessed",), "compare": ("nnUNet_results",),
                "evaluate-missing": ("nnUNet_preprocessed", "nnUNet_results"),
                "experiment": ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), "check-data": ("nnUNet_raw",)}


def check_paths(command: str) -> None:
    for name in NEEDED_PATHS.get(command, ()):
        value = os.environ.get(name)
        if not value:
            raise CMCLInputError(f"{name} is not set; export {name}=/path/to/{name} as nnU-Net's "
                                 f"documentation/set_environment_variables.md describes")
        if not os.path.isdir(value):
            raise CMCLInputError(f"{name}={value} is not a folder; create it or correct the path")


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

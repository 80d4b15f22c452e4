"""The study commands of ``nnunet-cmcl``: `experiment`, `demo` and `study`."""
from __future__ import annotations

import argparse

from nnunet_cmcl.cli.arguments import check_paths, dataset_arguments, device_argument
from nnunet_cmcl.errors import CMCLInputError


def add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="the whole study: per training seed, pretraining per fold on its training "
                                          "images, then every arm per fold and label regime, then the report "
                                          "(skips finished runs, resumes stopped ones)")
    dataset_arguments(p, "dataset name or id (planned and preprocessed)")
    p.add_argument("--folds", type=int, nargs="+", default=[0], help="folds (default 0)")
    p.add_argument("--fractions", type=float, nargs="+", default=None,
                   help="label fractions, 1 = the whole fold (default 1 unless --labeled is given)")
    p.add_argument("--labeled", type=int, nargs="+", default=None,
                   help="label regimes as numbers of labeled training cases (e.g. 2 4 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label-fraction subsets (default 0)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="repeat every training run once per seed (seeded trainers; e.g. 0 1 2)")
    p.add_argument("--labels-per-seed", action="store_true",
                   help="each training seed s draws its own labeled subsets (label seed --seed + s): the CIs then "
                        "cover which cases are labeled, not only the training's randomness")
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
    p.add_argument("--pool", default=None, help="pretrain on this dataset (see `prepare`): its fold k holds an "
                                                "unlabeled pool plus the training images of fold k")
    p.add_argument("--missing", nargs="+", default=None, metavar="MODALITY",
                   help="also validate every all-labels model without each of these modalities, or with 'all' "
                        "without each proper non-empty subset of them (2^K - 2 validations per model: 14 for BraTS)")
    device_argument(p)
    p.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.experiment import (check_modalities, default_arms, evaluate_missing_modalities,
                                              missing_subsets, report_experiment, run_experiment)

    baseline = args.baseline
    if args.train_seeds and baseline == "nnUNetTrainer":  # the default: nnU-Net's trainer reads no seed
        baseline = "nnUNetTrainerSeeded"
    if args.labels_per_seed and not args.train_seeds:
        raise CMCLInputError("--labels-per-seed draws a labeled subset per training seed; give --train-seeds too")
    arms = default_arms(args.pretrainer, args.finetuner, baseline, args.control, [tuple(a) for a in args.arm])
    if args.missing:
        check_modalities(args.d, args.missing)
    name, runs = run_experiment(args.d, args.c, args.p, args.folds, args.fractions, args.seed, arms, args.device,
                                args.train_seeds, args.labeled, args.pool, labels_per_seed=args.labels_per_seed)
    missing = evaluate_missing_modalities(name, args.c, args.p, runs, missing_subsets(name, args.missing),
                                          args.device) if args.missing else None
    print(report_experiment(name, args.c, args.p, runs, arms, missing=missing))
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="from nothing to a comparison on built-in data, on the CPU (about 20 min)")
    p.add_argument("--workdir", default="cmcl_demo", help="folder for nnU-Net's data and results (default cmcl_demo)")
    p.add_argument("--kind", default="brats", choices=("brats", "brain", "phantom"),
                   help="built-in dataset (default brats, the BraTS-like one the study measures)")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.25, help="label fraction of fold 0 (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    device_argument(p, "cpu", ("cpu", "cuda"))
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_cmcl.study.demo import run_demo

    run_demo(args.workdir, args.kind, args.cases, args.fraction, args.seed, args.device)
    return 0


def add_study(sub) -> None:
    p = sub.add_parser("study", help="the whole study as a preset: 'cpu' on the BraTS-like built-in data "
                                     "(docs/brats.md; about 15 h on 2 cores), 'cpu-defaults' the method's defaults "
                                     "against their alternatives on the same data and workdir (docs/method.md), "
                                     "'tissue' on the brain tissue data (about 2.5 h), "
                                     "'gpu' on your dataset with nnU-Net's budgets (resumable)")
    p.add_argument("--preset", required=True, choices=("cpu", "cpu-defaults", "tissue", "gpu"))
    p.add_argument("--workdir", default="cmcl_study", help="built-in presets: folder for nnU-Net's data and results")
    p.add_argument("--report-only", action="store_true",
                   help="built-in presets: train nothing, report the runs finished so far (also while the study "
                        "runs)")
    p.add_argument("--ledger", default=None, metavar="FOLDER",
                   help="built-in presets: keep each finished run's results (small files, no weights) in FOLDER and "
                        "restore them from there into the workdir, so the study goes on in a new workdir or on "
                        "another machine (e.g. FOLDER in git)")
    p.add_argument("-d", default=None, help="gpu: dataset name or id (planned and preprocessed)")
    p.add_argument("-c", default="3d_fullres", help="gpu: configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="gpu: plans identifier (default nnUNetPlans)")
    device_argument(p, None, ("cpu", "cuda"), "default: cpu for the built-in presets, cuda for 'gpu'")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    if args.preset != "gpu":
        from nnunet_cmcl.study.preset import run_study

        print(run_study(args.preset, args.workdir, args.device or "cpu", args.report_only, args.ledger))
        return 0
    for flag, given in (("--report-only", args.report_only), ("--ledger", args.ledger)):
        if given:
            raise CMCLInputError(f"{flag} is for the built-in presets (cpu, cpu-defaults, tissue), not --preset gpu")
    if args.d is None:
        raise CMCLInputError("--preset gpu runs on your dataset: give it with -d (planned and preprocessed)")
    check_paths("experiment")
    from nnunet_cmcl.study.preset import run_gpu_study

    print(run_gpu_study(args.d, args.c, args.p, args.device or "cuda"))
    return 0

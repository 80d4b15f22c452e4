"""The missing-modality commands of ``nnunet-cmcl``: `evaluate-missing` (a fold's validation without modalities)
and `predict` (segmentation of cases whose absent sequences have no file)."""
from __future__ import annotations

import argparse
import os

from nnunet_cmcl.cli.arguments import dataset_arguments, device_argument


def add_evaluate_missing(sub) -> None:
    p = sub.add_parser("evaluate-missing",
                       help="a fold's validation without one or several modalities, or without each subset of them "
                            "(nnU-Net's predictor and evaluator)",
                       description="Predicts the fold's validation cases with the absent modalities' channels set to "
                                   "0 after nnU-Net's normalisation and evaluates them with nnU-Net's evaluator, into "
                                   "fold_F/validation_missing_<A>/summary.json (validation_missing_<A>+<B> for "
                                   "several). --subsets all does every proper non-empty subset: 2^K - 2 validations "
                                   "for K modalities (14 for BraTS). Subsets evaluated earlier are skipped.")
    dataset_arguments(p, "dataset name or id")
    p.add_argument("-tr", required=True, help="trainer")
    p.add_argument("-f", type=int, required=True, help="fold")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--drop", nargs="+", metavar="MODALITY",
                       help="modalities (channel names) absent together, e.g. T2, or T1 T2")
    which.add_argument("--subsets", choices=("all",), help="all: every proper non-empty subset of the modalities")
    device_argument(p)
    p.set_defaults(func=_cmd_evaluate_missing)


def _cmd_evaluate_missing(args: argparse.Namespace) -> int:
    from nnunet_cmcl.evaluation.missing import evaluate_missing_subsets

    subsets = args.subsets if args.subsets else [args.drop]
    summaries = evaluate_missing_subsets(args.d, args.c, args.tr, args.f, subsets, args.p, args.device)
    print("summaries:\n" + "\n".join(f"  {summary}" for summary in summaries))
    print("compare trainers on one of them with --validation <its folder name>, e.g. --validation "
          f"{os.path.basename(os.path.dirname(summaries[0]))}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment cases with absent sequences (no file for them): nnU-Net's predictor "
                                       "with those channels set to 0 after normalisation",
                       description="Like nnUNetv2_predict, for cases named CASE_0000.nii.gz ... of which only the "
                                   "channels --present names have files. The absent channels are set to 0 after "
                                   "nnU-Net's preprocessing (as evaluate-missing and modality dropout do); see "
                                   "docs/missing_modalities.md. A model trained without modality dropout gets a "
                                   "warning.")
    p.add_argument("-i", required=True, help="input folder of the cases' images (nnU-Net's naming)")
    p.add_argument("-o", required=True, help="output folder for the segmentations")
    dataset_arguments(p, "dataset name or id the model was trained on")
    p.add_argument("-f", nargs="+", required=True, help="fold(s) of the model; several: their ensemble")
    p.add_argument("-tr", required=True, help="trainer")
    p.add_argument("--present", nargs="*", required=True, metavar="NAME",
                   help="the channels (names of dataset.json's channel_names) the cases have")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    device_argument(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from nnunet_cmcl.evaluation.predict_present import predict_present

    written = predict_present(args.i, args.o, args.d, args.c, args.f, args.tr, args.present, args.p, args.device,
                              args.chk)
    print(f"written {len(written)} segmentation(s) to {args.o}")
    return 0

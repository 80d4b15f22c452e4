"""`nnunet-cmcl evaluate-missing`: a fold's validation with a set of modalities absent, through nnU-Net's predictor.

The absent modalities' channels are set to 0 after nnU-Net's normalisation (the mean after z-scoring: what CMCL's
views and modality dropout show the network), the cases are predicted with nnU-Net's sliding window and exported
and evaluated with nnU-Net's own functions, into ``fold_X/validation_missing_<A>/summary.json`` for one absent
modality A and ``validation_missing_<A>+<B>`` for several, names in channel order. ``--subsets all`` does every
proper non-empty subset (2^K - 2 validations for K modalities: 6 for three, 14 for BraTS's four); the full set is
nnU-Net's own ``validation``. Each folder is written whole or not at all, and one already written is skipped.
``compare --validation validation_missing_<A>`` then compares two trainers under the same absence.
"""
from __future__ import annotations

import itertools
import os
from typing import Sequence

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnunet_cmcl.atomic import folder_written_atomically
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import dataset_name, trainer_folder, with_plugin_trainers

FOLDER_PREFIX = "validation_missing_"
SEPARATOR = "+"


def modality_channels(channel_names: dict) -> dict[str, list[int]]:
    """{modality: its channel indices}, in channel order. The grouping of ``pretraining.views.modality_groups``
    (channels of one name are one modality; a test keeps the two equal), which evaluation, reading nnU-Net's
    outputs only, may not import."""
    by_name: dict[str, list[int]] = {}
    for key in sorted(channel_names, key=int):
        by_name.setdefault(str(channel_names[key]), []).append(int(key))
    return by_name


def absent_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every proper non-empty subset of ``modalities``: one absent first, then two, ..., each in channel order."""
    return [s for size in range(1, len(modalities)) for s in itertools.combinations(modalities, size)]


def validation_folder(absent: Sequence[str]) -> str:
    """'validation_missing_T2', or 'validation_missing_T1+T2' for several absent modalities."""
    return FOLDER_PREFIX + SEPARATOR.join(absent)


def checked_subset(modalities: dict[str, list[int]], absent: Sequence[str], dataset: str) -> tuple[str, ...]:
    """``absent`` in channel order, duplicates dropped; refuses an unknown name and the set of every modality."""
    unknown = [m for m in absent if m not in modalities]
    if unknown:
        raise CMCLInputError(f"modality {unknown[0]} is not among the channels {list(modalities)} of {dataset}; give "
                             f"one of those names to --drop")
    subset = tuple(m for m in modalities if m in absent)
    if not subset:
        raise CMCLInputError(f"no modality to drop; give one or more of {list(modalities)} to --drop")
    if len(subset) == len(modalities):
        raise CMCLInputError(f"--drop {' '.join(subset)} leaves no modality of {dataset}; keep at least one")
    return subset


def evaluate_missing_subsets(dataset: str, configuration: str, trainer: str, fold: int,
                             subsets: Sequence[Sequence[str]] | str, plans: str = "nnUNetPlans", device: str = "cuda",
                             quiet: bool = False, log_prefix: str = "[evaluate-missing]") -> list[str]:
    """Predicts and evaluates fold ``fold``'s validation cases once per subset of absent modalities (``"all"``:
    every proper non-empty subset), skipping those done; returns their summary.json paths, in order."""
    # nnU-Net's predictor, in this process, finds the trainer class through nnUNet_extTrainer: without the
    # plugin's folder there it would not find this package's trainers
    os.environ["nnUNet_extTrainer"] = with_plugin_trainers(os.environ.get("nnUNet_extTrainer"))
    name = dataset_name(dataset)
    model_folder = trainer_folder(join(nnUNet_results, name), trainer, plans, configuration)
    if not isfile(join(model_folder, f"fold_{fold}", "checkpoint_final.pth")):
        raise CMCLInputError(f"{trainer} has no finished fold {fold} ({model_folder}); train it first")
    dataset_json = load_json(join(model_folder, "dataset.json"))
    modalities = modality_channels(dataset_json["channel_names"])
    if isinstance(subsets, str):
        if subsets != "all":
            raise CMCLInputError(f"--subsets {subsets}: only 'all' is known; or give modalities with --drop")
        if len(modalities) < 2:
            raise CMCLInputError(f"{name} has one modality ({list(modalities)}): no proper subset can be absent")
        subsets = absent_subsets(list(modalities))
    subsets = list(dict.fromkeys(checked_subset(modalities, s, name) for s in subsets))
    splits = load_json(join(nnUNet_preprocessed, name, "splits_final.json"))
    if fold >= len(splits):
        raise CMCLInputError(f"fold {fold} is not in splits_final.json of {name} ({len(splits)} folds)")
    fold_folder = join(model_folder, f"fold_{fold}")
    summaries = [join(fold_folder, validation_folder(s), "summary.json") for s in subsets]
    trained = os.path.getmtime(join(fold_folder, "checkpoint_final.pth"))
    # done: written after the model it evaluates (a fold trained again is evaluated again)
    todo = [(s, out) for s, out in zip(subsets, summaries) if not isfile(out) or os.path.getmtime(out) < trained]
    if not quiet:
        done = [SEPARATOR.join(s) for s in subsets if s not in dict(todo)]
        print(f"{log_prefix} {trainer} fold {fold}: {len(subsets)} subset(s) of absent modalities, {len(done)} "
              f"evaluated earlier{' (' + ', '.join(done) + ')' if done else ''}", flush=True)
    if not todo:
        return summaries

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (fold,), "checkpoint_final.pth")
    data_folder = join(nnUNet_preprocessed, name, predictor.configuration_manager.data_identifier)
    cases = infer_dataset_class(data_folder)(data_folder, splits[fold]["val"])
    for i, (subset, summary) in enumerate(todo, 1):
        if not quiet:
            n = len(cases.identifiers)
            print(f"{log_prefix} {i}/{len(todo)}: without {SEPARATOR.join(subset)}, {n} case{'s' * (n != 1)}",
                  flush=True)
        channels = [c for m in subset for c in modalities[m]]
        _evaluate_one(predictor, cases, channels, dataset_json, name, os.path.dirname(summary))
    return summaries


def _evaluate_one(predictor: nnUNetPredictor, cases, channels: list[int], dataset_json: dict, name: str,
                  output: str) -> None:
    # a half-finished evaluation never sits where compare looks
    with folder_written_atomically(output) as tmp:
        for case in cases.identifiers:
            data, _, _, properties = cases.load_case(case)
            data = torch.from_numpy(data[:]).float()
            data[channels] = 0
            logits = predictor.predict_sliding_window_return_logits(data).cpu()
            export_prediction_from_logits(logits, properties, predictor.configuration_manager,
                                          predictor.plans_manager, dataset_json, join(tmp, case))
        labels = predictor.label_manager
        compute_metrics_on_folder(join(nnUNet_preprocessed, name, "gt_segmentations"), tmp, join(tmp, "summary.json"),
                                  predictor.plans_manager.image_reader_writer_class(), dataset_json["file_ending"],
                                  labels.foreground_regions if labels.has_regions else labels.foreground_labels,
                                  labels.ignore_label, num_processes=1)


def evaluate_missing(dataset: str, configuration: str, trainer: str, fold: int, drop: str | Sequence[str],
                     plans: str = "nnUNetPlans", device: str = "cuda", quiet: bool = False) -> str:
    """Fold ``fold``'s validation without modality ``drop`` (or the modalities ``drop`` lists); returns its
    summary.json (left as it is when it exists)."""
    absent = [drop] if isinstance(drop, str) else list(drop)
    return evaluate_missing_subsets(dataset, configuration, trainer, fold, [absent], plans, device, quiet)[0]

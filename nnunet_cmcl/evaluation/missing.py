"""`nnunet-cmcl evaluate-missing`: a fold's validation with one modality removed, through nnU-Net's predictor.

The modality's channels are set to 0 after nnU-Net's normalisation (the mean after z-scoring: what CMCL's views
show the encoder), the cases are predicted with nnU-Net's sliding window and exported and evaluated with
nnU-Net's own functions, into ``fold_X/validation_missing_<NAME>/summary.json``. ``compare --validation
validation_missing_<NAME>`` then compares two trainers under the same missing modality.
"""
from __future__ import annotations

import os

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


def evaluate_missing(dataset: str, configuration: str, trainer: str, fold: int, drop: str,
                     plans: str = "nnUNetPlans", device: str = "cuda", quiet: bool = False) -> str:
    """Predicts and evaluates fold ``fold``'s validation cases without modality ``drop``; returns summary.json."""
    # nnU-Net's predictor, in this process, finds the trainer class through nnUNet_extTrainer: without the
    # plugin's folder there it would not find this package's trainers
    os.environ["nnUNet_extTrainer"] = with_plugin_trainers(os.environ.get("nnUNet_extTrainer"))
    name = dataset_name(dataset)
    model_folder = trainer_folder(join(nnUNet_results, name), trainer, plans, configuration)
    if not isfile(join(model_folder, f"fold_{fold}", "checkpoint_final.pth")):
        raise CMCLInputError(f"{trainer} has no finished fold {fold} ({model_folder}); train it first")
    dataset_json = load_json(join(model_folder, "dataset.json"))
    channels = [i for i, n in sorted(dataset_json["channel_names"].items(), key=lambda kv: int(kv[0])) if n == drop]
    if not channels:
        raise CMCLInputError(f"modality {drop} is not among the channels {list(dataset_json['channel_names'].values())}"
                             f" of {name}; give one of those names to --drop")
    splits = load_json(join(nnUNet_preprocessed, name, "splits_final.json"))
    if fold >= len(splits):
        raise CMCLInputError(f"fold {fold} is not in splits_final.json of {name} ({len(splits)} folds)")

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (fold,), "checkpoint_final.pth")
    data_folder = join(nnUNet_preprocessed, name, predictor.configuration_manager.data_identifier)
    cases = infer_dataset_class(data_folder)(data_folder, splits[fold]["val"])
    output = join(model_folder, f"fold_{fold}", f"validation_missing_{drop}")
    # a half-finished evaluation never sits where compare looks
    with folder_written_atomically(output) as tmp:
        for i, case in enumerate(cases.identifiers, 1):
            data, _, _, properties = cases.load_case(case)
            data = torch.from_numpy(data[:]).float()
            data[[int(c) for c in channels]] = 0
            logits = predictor.predict_sliding_window_return_logits(data).cpu()
            export_prediction_from_logits(logits, properties, predictor.configuration_manager,
                                          predictor.plans_manager, dataset_json, join(tmp, case))
            if not quiet:
                print(f"[evaluate-missing] {case} predicted without {drop} ({i}/{len(cases.identifiers)})", flush=True)
        labels = predictor.label_manager
        compute_metrics_on_folder(join(nnUNet_preprocessed, name, "gt_segmentations"), tmp, join(tmp, "summary.json"),
                                  predictor.plans_manager.image_reader_writer_class(), dataset_json["file_ending"],
                                  labels.foreground_regions if labels.has_regions else labels.foreground_labels,
                                  labels.ignore_label, num_processes=1)
    return join(output, "summary.json")

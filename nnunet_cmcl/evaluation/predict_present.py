"""`nnunet-cmcl predict --present`: segment cases some of whose sequences were never acquired, with nnU-Net's
reader, preprocessor, predictor and export.

Input cases are named as nnU-Net names them, ``CASE_0000.nii.gz`` ... one file per channel; an absent channel has
no file. nnU-Net's preprocessing needs every channel, so each absent channel is fed a placeholder: the case's
file of its first present channel, read a second time (nothing is written). After nnU-Net's preprocessing the
absent channels are set to 0, the value every absent channel has in ``evaluate-missing`` and modality dropout.
Why this is correct: nnU-Net's preprocessing couples channels in one place only, the crop to the non-zero region
(``crop_to_nonzero``: the union of every channel's non-zero voxels); a copy of a present channel adds nothing to
that union, so the crop is the one of the present channels alone. Normalisation and resampling are per channel,
so the present channels come out exactly as nnU-Net preprocesses them, and the placeholder's values, whatever
the absent channel's normalisation makes of them, are overwritten with 0. The one difference to ``evaluate-missing``
(which zeroes channels of cases preprocessed with every channel) is that crop: there the absent channel's
non-zero region counted too. An all-zero placeholder would crop the same but runs the absent channel's
normalisation on a constant image; the copy keeps every step on ordinary data.

Refused in one line before any work: an unknown channel name, no present channel, a case without the file of a
channel ``--present`` names, no case at all. A model trained without modality dropout gets a one-line warning:
it never saw a channel at 0.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

from nnunet_cmcl.atomic import write_json_atomically
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.missing import modality_channels
from nnunet_cmcl.naming import dataset_name, find_trainer_class, trainer_folder, with_plugin_trainers
from nnunet_cmcl.run_settings import SETTINGS_FILE

# the class attribute of transfer.modality_dropout.ModalityDropout (evaluation may not import the trainers)
DROPOUT_SETTING = "modality_dropout_probability"
RECORD_FILE = "predict_present.json"


def channel_file(folder: str, case: str, channel: int, file_ending: str) -> str:
    return join(folder, f"{case}_{channel:04d}{file_ending}")


def dropout_probability(model_folder: str, folds: Sequence, trainer: str) -> float:
    """The modality dropout the model was trained with: as its fold folders recorded it (cmcl_settings.json),
    else as its trainer class has it now; 0 for a trainer without the mixin (nnU-Net's own, for instance)."""
    for fold in folds:
        path = join(model_folder, f"fold_{fold}", SETTINGS_FILE)
        if isfile(path):
            with open(path) as f:
                settings = json.load(f).get("settings", {})
            value = (settings.get("overrides") or {}).get(DROPOUT_SETTING, settings.get(DROPOUT_SETTING))
            return float(value or 0)
    cls = find_trainer_class(trainer)
    if cls is None:
        return 0.0
    return float((getattr(cls, "overrides", None) or {}).get(DROPOUT_SETTING, getattr(cls, DROPOUT_SETTING, 0)) or 0)


def _check_model(dataset: str, configuration: str, folds: Sequence, trainer: str, plans: str,
                 checkpoint: str) -> tuple[str, str, dict]:
    name = dataset_name(dataset)
    model_folder = trainer_folder(join(nnUNet_results, name), trainer, plans, configuration)
    for fold in folds:
        if not isfile(join(model_folder, f"fold_{fold}", checkpoint)):
            raise CMCLInputError(f"{trainer} has no {checkpoint} in fold {fold} ({model_folder}); train it first or "
                                 f"give the folds it has with -f")
    plans_manager = PlansManager(load_json(join(model_folder, "plans.json")))
    if plans_manager.get_configuration(configuration).previous_stage_name is not None:
        raise CMCLInputError(f"{configuration} is a cascade stage; predict --present runs single-stage models "
                             f"(2d, 3d_fullres, 3d_lowres)")
    return name, model_folder, load_json(join(model_folder, "dataset.json"))


def _check_present(modalities: dict[str, list[int]], present: Sequence[str], name: str) -> list[str]:
    unknown = [m for m in present if m not in modalities]
    if unknown:
        raise CMCLInputError(f"--present {unknown[0]}: not a channel of {name}, whose channels are "
                             f"{', '.join(modalities)}; give names among them")
    if not present:
        raise CMCLInputError(f"no present channel: give --present one or more of {', '.join(modalities)}")
    return [m for m in modalities if m in present]


def _check_cases(input_folder: str, file_ending: str, present_channels: list[int],
                 channel_names: list[str]) -> list[str]:
    if not isdir(input_folder):
        raise CMCLInputError(f"-i {input_folder} is not a folder; give the folder of the cases' images")
    cases = [str(c) for c in get_identifiers_from_splitted_dataset_folder(input_folder, file_ending)]
    if not cases:
        raise CMCLInputError(f"{input_folder} holds no CASE_XXXX{file_ending} images (nnU-Net's naming, one file per "
                             f"channel); give the folder of the cases")
    for case in cases:
        for c in present_channels:
            if not isfile(channel_file(input_folder, case, c, file_ending)):
                raise CMCLInputError(f"case {case} has no {case}_{c:04d}{file_ending} ({channel_names[c]}), which "
                                     f"--present names; add the file or leave {channel_names[c]} out of --present")
    return cases


def predict_present(input_folder: str, output_folder: str, dataset: str, configuration: str, folds: Sequence,
                    trainer: str, present: Sequence[str], plans: str = "nnUNetPlans", device: str = "cuda",
                    checkpoint: str = "checkpoint_final.pth", quiet: bool = False) -> list[str]:
    """Segments every case of ``input_folder`` with the modalities ``present`` only (see the module docstring);
    returns the segmentation files written to ``output_folder``, one per case, each whole or not at all."""
    folds = [f if f == "all" else int(f) for f in folds]
    # nnU-Net's predictor finds the trainer class through nnUNet_extTrainer: the plugin's folder must be in it
    os.environ["nnUNet_extTrainer"] = with_plugin_trainers(os.environ.get("nnUNet_extTrainer"))
    name, model_folder, dataset_json = _check_model(dataset, configuration, folds, trainer, plans, checkpoint)
    modalities = modality_channels(dataset_json["channel_names"])
    present = _check_present(modalities, list(dict.fromkeys(present)), name)
    absent = [m for m in modalities if m not in present]
    present_channels = [c for m in present for c in modalities[m]]
    absent_channels = [c for m in absent for c in modalities[m]]
    channel_names = [str(dataset_json["channel_names"][k]) for k in sorted(dataset_json["channel_names"], key=int)]
    ending = dataset_json["file_ending"]
    cases = _check_cases(input_folder, ending, present_channels, channel_names)
    if absent and dropout_probability(model_folder, folds, trainer) == 0:
        print(f"warning: {trainer} was trained without modality dropout: it never saw missing channels, so expect "
              f"a lower Dice without {'+'.join(absent)} than a _modalityDropout trainer gives", file=sys.stderr)

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, tuple(folds), checkpoint)
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    os.makedirs(output_folder, exist_ok=True)
    written = []
    for i, case in enumerate(cases, 1):
        # an absent channel reads the case's first present channel: see the module docstring
        files = [channel_file(input_folder, case, c if c in present_channels else present_channels[0], ending)
                 for c in range(len(channel_names))]
        data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager,
                                                    predictor.configuration_manager, dataset_json)
        data = torch.from_numpy(data).float()
        data[absent_channels] = 0
        logits = predictor.predict_logits_from_preprocessed_data(data).cpu()
        written.append(_export_atomically(logits, properties, predictor, dataset_json, output_folder, case))
        if not quiet:
            print(f"[predict] {case} ({i}/{len(cases)}) with {'+'.join(present)}"
                  f"{', without ' + '+'.join(absent) if absent else ''}: {written[-1]}", flush=True)
    write_json_atomically({"model": model_folder, "folds": folds, "checkpoint": checkpoint, "present": present,
                           "absent": absent, "absent_channels_set_to": 0, "cases": cases},
                          join(output_folder, RECORD_FILE))
    return written


def _export_atomically(logits: torch.Tensor, properties: dict, predictor: nnUNetPredictor, dataset_json: dict,
                       output_folder: str, case: str) -> str:
    """nnU-Net's export under a hidden name, then renamed: a kill never leaves a truncated segmentation."""
    ending = dataset_json["file_ending"]
    tmp, final = join(output_folder, f".{case}.partial"), join(output_folder, case + ending)
    try:
        export_prediction_from_logits(logits, properties, predictor.configuration_manager, predictor.plans_manager,
                                      dataset_json, tmp)
        os.replace(tmp + ending, final)
    finally:
        if os.path.exists(tmp + ending):
            os.remove(tmp + ending)
    return final

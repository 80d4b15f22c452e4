"""`nnunet-cmcl prepare`: a (larger, possibly unlabeled) pretraining dataset, preprocessed with the target's plans.

Steps: check that both datasets have the same channels in the same order; move the target's plans onto the
pretraining dataset with nnU-Net's own ``move_plans_between_datasets``; preprocess it with those plans (nnU-Net's
preprocessing; images only when there is no ``labelsTr``); write the pretraining plans (``plans/``).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, save_json
from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import \
    move_plans_between_datasets
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import (create_lists_from_splitted_dataset_folder,
                                      get_identifiers_from_splitted_dataset_folder)

from nnunet_cmcl.atomic import folder_written_atomically
from nnunet_cmcl.data.checks import check_finite_images
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import channel_list, dataset_name
from nnunet_cmcl.plans.pretraining import derive_pretraining_plans, find_pretraining_trainer, write_pretraining_plans


def _preprocess_images_only_case(args) -> str:
    """One case without label: nnU-Net's run_case with no segmentation (as for inference), saved as training data."""
    identifier, files, output_folder, plans, configuration, dataset_json = args
    manager = PlansManager(plans)
    conf = manager.get_configuration(configuration)
    data, seg, properties = DefaultPreprocessor(verbose=False).run_case(files, None, manager, conf, dataset_json)
    # no labels: no foreground locations to oversample (CMCL samples patches uniformly anyway)
    properties["class_locations"] = {label: [] for label in manager.get_label_manager(dataset_json).foreground_labels}
    # chunking as nnU-Net's run_case_save does it, for its patch-wise reads
    blocks, chunks = comp_blosc2_params(data.shape, tuple(conf.patch_size), 4)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(conf.patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data.astype("float32"), seg, properties, join(output_folder, identifier),
                                  chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    return identifier


def preprocess_images_only(name: str, plans: dict, configuration: str, dataset_json: dict, processes: int) -> int:
    """Preprocesses every case of imagesTr into nnUNet_preprocessed/<name>/<data_identifier>; returns the count.

    Writes to a temporary folder renamed at the end, so an interrupted run leaves no half-written dataset.
    """
    images = join(nnUNet_raw, name, "imagesTr")
    ending = dataset_json["file_ending"]
    identifiers = get_identifiers_from_splitted_dataset_folder(images, ending)
    files = create_lists_from_splitted_dataset_folder(images, ending, identifiers)
    if len(identifiers) == 0:
        raise CMCLInputError(f"{images} holds no {ending} images; put the pretraining cases there")
    output = join(nnUNet_preprocessed, name, plans["configurations"][configuration]["data_identifier"])
    with folder_written_atomically(output) as tmp, multiprocessing.get_context("spawn").Pool(processes) as pool:
        jobs = [(i, f, tmp, plans, configuration, dataset_json) for i, f in zip(identifiers, files)]
        for n, identifier in enumerate(pool.imap_unordered(_preprocess_images_only_case, jobs), 1):
            print(f"[prepare] preprocessed {identifier} ({n}/{len(jobs)})", flush=True)
    return len(identifiers)


def prepare(target: str, pretrain: str, configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
            processes: int = 4, trainer: str = "nnUNetTrainerCMCL", num_gpus: int = 1) -> str:
    """Prepares ``pretrain`` for pretraining with ``trainer`` on ``num_gpus`` GPUs and the plans of ``target``;
    returns the nnUNetv2_train command."""
    trainer_class = find_pretraining_trainer(trainer)
    target_name, pretrain_name = dataset_name(target), dataset_name(pretrain)
    if target_name == pretrain_name:
        raise CMCLInputError(f"-s and -t are both {target_name}; pretrain on the target itself without prepare")
    target_plans_file = join(nnUNet_preprocessed, target_name, plans_identifier + ".json")
    if not isfile(target_plans_file):
        raise CMCLInputError(f"{target_plans_file} does not exist; run nnUNetv2_plan_and_preprocess -d {target} first")
    target_json = load_json(join(nnUNet_preprocessed, target_name, "dataset.json"))
    raw_json_file = join(nnUNet_raw, pretrain_name, "dataset.json")
    if not isfile(raw_json_file):
        raise CMCLInputError(f"{raw_json_file} does not exist; write the pretraining dataset in nnUNet_raw format")
    pretrain_json = load_json(raw_json_file)
    pretrain_json.setdefault("labels", target_json["labels"])  # nnU-Net's trainer needs a label set, even unused
    pretrain_channels = channel_list(pretrain_json["channel_names"])
    target_channels = channel_list(target_json["channel_names"])
    if pretrain_channels != target_channels:
        raise CMCLInputError(
            f"pretraining dataset {pretrain_name} has channels ({', '.join(pretrain_channels)}), target "
            f"{target_name} has ({', '.join(target_channels)}); give the pretraining images the target's "
            f"channel order (file suffix _0000 = {target_channels[0]}, ...)")
    if configuration not in load_json(target_plans_file)["configurations"]:
        raise CMCLInputError(f"configuration {configuration} is not in {target_plans_file}")
    # the moved plans are the target's: a batch that cannot be split over the GPUs is refused before preprocessing
    derive_pretraining_plans(load_json(target_plans_file), configuration, pretrain_json, trainer_class,
                             num_gpus=num_gpus)
    check_finite_images(join(nnUNet_raw, pretrain_name), processes)  # a NaN voxel would poison every step later

    folder = join(nnUNet_preprocessed, pretrain_name)
    os.makedirs(folder, exist_ok=True)
    moved_file = join(folder, plans_identifier + ".json")
    if isfile(moved_file):
        print(f"[prepare] {moved_file} exists: kept (delete it to move the plans again)")
    else:
        move_plans_between_datasets(target_name, pretrain_name, plans_identifier, plans_identifier)
        print(f"[prepare] moved {plans_identifier} of {target_name} onto {pretrain_name}")
    plans = load_json(moved_file)
    if isdir(join(nnUNet_raw, pretrain_name, "labelsTr")):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

        preprocess_dataset(int(pretrain_name[7:10]), plans_identifier, [configuration], [processes])
    else:
        save_json(pretrain_json, join(folder, "dataset.json"), sort_keys=False)
        # the plans (normalisation included) come from the target's fingerprint, so it describes them
        shutil.copyfile(join(nnUNet_preprocessed, target_name, "dataset_fingerprint.json"),
                        join(folder, "dataset_fingerprint.json"))
        n = preprocess_images_only(pretrain_name, plans, configuration, pretrain_json, processes)
        print(f"[prepare] {n} unlabeled cases preprocessed")
    plans_name, report, command = write_pretraining_plans(folder, plans, configuration, pretrain_json, trainer_class,
                                                          pretrain_name[7:10], num_gpus)
    print(f"[prepare] pretraining plans {plans_name}: {report}")
    return command


def pretrain_plans(dataset: str, configuration: str, plans_identifier: str, trainer: str,
                   num_gpus: int = 1) -> tuple[str, str]:
    """Writes the pretraining plans of an already preprocessed ``dataset`` for ``trainer`` on ``num_gpus`` GPUs;
    returns (report, the nnUNetv2_train command)."""
    trainer_class = find_pretraining_trainer(trainer)
    folder = join(nnUNet_preprocessed, dataset_name(dataset))
    plans_file = join(folder, plans_identifier + ".json")
    if not isfile(plans_file):
        raise CMCLInputError(f"{plans_file} does not exist; plan the dataset first")
    if configuration not in load_json(plans_file)["configurations"]:
        raise CMCLInputError(f"configuration {configuration} is not in {plans_file}; give one of its configurations")
    _, report, command = write_pretraining_plans(folder, load_json(plans_file), configuration,
                                                 load_json(join(folder, "dataset.json")), trainer_class, dataset,
                                                 num_gpus)
    return report, command

"""Pretraining plans from a target's plans: the same architecture and data, a batch sized for the CMCL step.

The CMCL step runs only the encoder, on sub-crops of the patch, so it holds fewer feature maps than the
vanilla step. nnU-Net sizes its batch by the feature-map volume of the network
(``compute_conv_feature_map_size``); the freed volume here buys more samples, hence more negatives. A trainer
that also reconstructs (nnUNetTrainerCMCL_DAE) runs the decoder too, and its plans are sized for that.
"""
from __future__ import annotations

import math
from copy import deepcopy

from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import find_trainer_class
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.pretraining.views import ViewSampler, modality_groups, total_strides


def find_pretraining_trainer(name: str) -> type:
    """The pretraining trainer class called ``name``, as ``-tr`` of nnUNetv2_train names it: one shipped with
    nnunet-cmcl, or a subclass of nnUNetTrainerCMCL in a folder of ``nnUNet_extTrainer``."""
    cls = find_trainer_class(name)
    if cls is None or not issubclass(cls, nnUNetTrainerCMCL):
        raise CMCLInputError(f"{name} is not a pretraining trainer (a subclass of nnUNetTrainerCMCL); "
                             f"`nnunet-cmcl trainers` lists the shipped ones")
    return cls


def plans_suffix(trainer_class: type) -> str:
    """'_CMCL' for nnUNetTrainerCMCL, '_CMCL_DAE' for nnUNetTrainerCMCL_DAE, ...: one plans file per trainer."""
    return "_" + trainer_class.__name__.removeprefix("nnUNetTrainer")


def derive_pretraining_plans(plans: dict, configuration: str, dataset_json: dict,
                             trainer_class: type = nnUNetTrainerCMCL, max_factor: float = 4.0) -> tuple[dict, str]:
    """(plans named ``<plans_name>`` + ``plans_suffix(trainer_class)`` with a batch for ``configuration`` sized for
    that trainer's step, one-line report).

    Everything else, data_identifier and architecture included, stays as it is, so the preprocessed data
    is reused and the weights fit the target network. The batch grows by the ratio of feature-map volumes
    (vanilla step / pretraining step), at most ``max_factor``, never shrinks.
    """
    config = trainer_class.cmcl_config
    manager = PlansManager(deepcopy(plans))
    conf = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, conf, dataset_json)
    network = nnUNetTrainer.build_network_architecture(
        manager, conf, channels, manager.get_label_manager(dataset_json).num_segmentation_heads, False)
    sampler = ViewSampler(modality_groups(dataset_json["channel_names"]), channels, conf.patch_size,
                          total_strides(network.encoder.strides), config)
    vanilla = float(network.compute_conv_feature_map_size(conf.patch_size))
    reconstructs = config.weight_reconstruction > 0  # the decoder runs on every view too
    in_step = network if reconstructs else network.encoder
    cmcl = sampler.num_views * float(in_step.compute_conv_feature_map_size(sampler.crop_size))
    factor = min(max_factor, max(1.0, vanilla / cmcl))
    batch = max(conf.batch_size, math.floor(conf.batch_size * factor))
    derived = deepcopy(plans)
    derived["plans_name"] = plans["plans_name"] + plans_suffix(trainer_class)
    derived["configurations"][configuration]["batch_size"] = batch
    report = (f"{configuration}: batch {conf.batch_size} -> {batch} (the {trainer_class.__name__} step, "
              f"{sampler.num_views} views of crop {sampler.crop_size}, "
              f"{'encoder and decoder' if reconstructs else 'encoder only'}, holds {cmcl / vanilla:.2f}x the "
              f"feature maps of the vanilla step)")
    return derived, report


def write_pretraining_plans(folder: str, plans: dict, configuration: str, dataset_json: dict, trainer_class: type,
                            dataset: str) -> tuple[str, str, str]:
    """Derives the plans, writes them into the preprocessed ``folder``; returns (plans name, report, the
    nnUNetv2_train command that pretrains ``dataset`` with them)."""
    derived, report = derive_pretraining_plans(plans, configuration, dataset_json, trainer_class)
    save_json(derived, join(folder, derived["plans_name"] + ".json"), sort_keys=False)
    command = f"nnUNetv2_train {dataset} {configuration} all -tr {trainer_class.__name__} -p {derived['plans_name']}"
    return derived["plans_name"], report, command

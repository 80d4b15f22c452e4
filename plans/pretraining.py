"""Pretraining plans from a target's plans: the same architecture and data, a batch sized for the CMCL step.

The CMCL step runs only the encoder, on sub-crops of the patch, so it holds fewer feature maps than the
vanilla step. nnU-Net sizes its batch by the feature-map volume of the network
(``compute_conv_feature_map_size``); the freed volume here buys more samples, hence more negatives.
"""
from __future__ import annotations

import math
from copy import deepcopy

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_cmcl.config import CMCLConfig
from nnunet_cmcl.views import ViewSampler, modality_groups, total_strides

SUFFIX = "_CMCL"


def derive_pretraining_plans(plans: dict, configuration: str, dataset_json: dict, config: CMCLConfig = CMCLConfig(),
                             max_factor: float = 4.0) -> tuple[dict, str]:
    """(plans named ``<plans_name>_CMCL`` with a larger batch for ``configuration``, one-line report).

    Everything else, data_identifier and architecture included, stays as it is, so the preprocessed data
    is reused and the weights fit the target network. The batch grows by the ratio of feature-map volumes
    (vanilla step / CMCL step), at most ``max_factor``, never shrinks.
    """
    manager = PlansManager(deepcopy(plans))
    conf = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, conf, dataset_json)
    network = nnUNetTrainer.build_network_architecture(
        manager, conf, channels, manager.get_label_manager(dataset_json).num_segmentation_heads, False)
    sampler = ViewSampler(modality_groups(dataset_json["channel_names"]), channels, conf.patch_size,
                          total_strides(network.encoder.strides), config)
    vanilla = float(network.compute_conv_feature_map_size(conf.patch_size))
    cmcl = sampler.num_views * float(network.encoder.compute_conv_feature_map_size(sampler.crop_size))
    factor = min(max_factor, max(1.0, vanilla / cmcl))
    batch = max(conf.batch_size, math.floor(conf.batch_size * factor))
    derived = deepcopy(plans)
    derived["plans_name"] = plans["plans_name"] + SUFFIX
    derived["configurations"][configuration]["batch_size"] = batch
    report = (f"{configuration}: batch {conf.batch_size} -> {batch} (the CMCL step, {sampler.num_views} views "
              f"of crop {sampler.crop_size}, encoder only, holds {cmcl / vanilla:.2f}x the feature maps of the "
              f"vanilla step)")
    return derived, report

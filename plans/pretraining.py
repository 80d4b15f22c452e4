"""Pretraining plans from a target's plans: the same architecture and data, a batch sized for the CMCL step.

The CMCL step runs only the encoder, on sub-crops of the patch, so it holds fewer feature maps than the
vanilla step. nnU-Net sizes its batch by the feature-map volume of the network
(``compute_conv_feature_map_size``); the freed volume here buys more samples, hence more negatives, less what the
dense loss's logits hold (``dense_logits_per_sample``: up to a sixth of a 2d sample, under 1 % in 3d). A trainer
that also reconstructs (nnUNetTrainerCMCL_DAE, _recon) runs the decoder on every view too and can hold more than
the vanilla step: its batch shrinks until the step fits the memory the target plans were sized for.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import NamedTuple

import torch
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


class PretrainingBatch(NamedTuple):
    """A pretraining batch and nnU-Net's feature-map estimate (``compute_conv_feature_map_size``) behind it."""
    target: int  # the target plans' batch
    batch: int  # the pretraining batch
    per_sample: float  # one sample's pretraining step / one sample's vanilla step
    sampler: ViewSampler
    reconstructs: bool  # the decoder runs on every view too
    num_gpus: int = 1

    @property
    def memory_ratio(self) -> float:
        """The feature maps one GPU holds in the pretraining step (``batch`` / ``num_gpus`` samples) / those of the
        vanilla step at the target's batch, the step one GPU was sized for."""
        return self.batch * self.per_sample / (self.num_gpus * self.target)


# The dense loss's logits stay float32 under any autocast. Bytes kept for backward per logit: 4.4, measured with
# saved_tensors_hooks on the 2d plans' shapes; bytes per element of nnU-Net's estimate in a half-precision step:
# 4.1 (8.2 in float32, the vanilla step's activations on the default 3d_fullres plan at batch 1 against its
# estimate, docs/standard_plans.md, halved). So one logit costs about this many feature-map elements
LOGIT_FEATURE_ELEMENTS = 4.4 / 4.1


def dense_logits_per_sample(sampler: ViewSampler, encoder_strides, config, batch: int) -> int:
    """Logits one sample's dense anchors make across all dense terms at a (global) ``batch``: V * M anchors, each
    against the V * M embeddings of every sample in its group (CMCLLoss: at most ``dense_max_candidates`` in all,
    one sample at least) or, unbounded, of the whole batch."""
    if config.weight_dense <= 0:
        return 0
    v = sampler.num_views
    counts = [sampler.num_locations] + [
        sampler.stage_grid(total_strides(encoder_strides[-k:]), config.stage_locations).num_locations
        for k in range(1, config.dense_stages + 1)]
    bound = config.dense_max_candidates
    group = lambda m: min(batch, max(1, bound // (v * m))) if bound else batch  # noqa: E731 (samples an anchor sees)
    return sum(v * m * v * m * group(m) for m in counts)


def size_pretraining_batch(plans: dict, configuration: str, dataset_json: dict,
                           trainer_class: type = nnUNetTrainerCMCL, max_factor: float = 4.0,
                           num_gpus: int = 1) -> PretrainingBatch:
    """The largest batch, at most ``max_factor`` x the target's batch and divisible by ``num_gpus``, whose step
    holds on each GPU at most the vanilla step's feature maps at the target's batch (the memory the target plans
    were sized for, on one GPU); at least 1 on one GPU.

    nnU-Net splits the plans' batch over the GPUs (``-num_gpus``), so each GPU holds ``batch / num_gpus`` samples;
    the cap stays on the whole batch, the one the loss sees."""
    if num_gpus < 1:
        raise CMCLInputError(f"-num_gpus {num_gpus}: give the number of GPUs the pretraining runs on, 1 or more")
    config = trainer_class.cmcl_config
    manager = PlansManager(deepcopy(plans))
    conf = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, conf, dataset_json)
    # the estimate reads only the network's shapes: on the meta device it allocates and initialises no weights
    with torch.device("meta"):
        network = nnUNetTrainer.build_network_architecture(
            manager, conf, channels, manager.get_label_manager(dataset_json).num_segmentation_heads, False)
    sampler = ViewSampler(modality_groups(dataset_json["channel_names"]), channels, conf.patch_size,
                          total_strides(network.encoder.strides), config)
    vanilla = float(network.compute_conv_feature_map_size(conf.patch_size))
    reconstructs = config.weight_reconstruction > 0
    in_step = network if reconstructs else network.encoder
    maps = sampler.num_views * float(in_step.compute_conv_feature_map_size(sampler.crop_size)) / vanilla

    def per_sample(batch: int) -> float:  # feature maps plus the dense logits, which grow with the batch
        logits = dense_logits_per_sample(sampler, network.encoder.strides, config, batch)
        return maps + LOGIT_FEATURE_ELEMENTS * logits / vanilla

    # the largest batch within max_factor whose step fits; the tolerance keeps a step of exactly the vanilla
    # volume from losing a sample to rounding
    fits = math.floor(conf.batch_size * max_factor * (1 + 1e-9))
    while fits > 0 and fits * per_sample(fits) > num_gpus * conf.batch_size * (1 + 1e-9):
        fits -= 1
    batch = fits - fits % num_gpus
    if batch == 0 and num_gpus > 1:
        raise CMCLInputError(
            f"-num_gpus {num_gpus}: the {trainer_class.__name__} batch of {configuration} can be at most {fits} "
            f"(within {max_factor:g}x the plans' batch {conf.batch_size} and the vanilla step's memory per GPU), "
            f"fewer samples than GPUs; give -num_gpus {max(fits, 1)} or less")
    # one sample that holds more than the vanilla step still runs on one GPU: the smallest batch there is
    return PretrainingBatch(conf.batch_size, max(batch, 1), per_sample(max(batch, 1)), sampler, reconstructs, num_gpus)


def derive_pretraining_plans(plans: dict, configuration: str, dataset_json: dict,
                             trainer_class: type = nnUNetTrainerCMCL, max_factor: float = 4.0,
                             num_gpus: int = 1) -> tuple[dict, str]:
    """(plans named ``<plans_name>`` + ``plans_suffix(trainer_class)`` with a batch for ``configuration`` sized for
    that trainer's step by ``size_pretraining_batch``, one-line report).

    Everything else, data_identifier and architecture included, stays as it is, so the preprocessed data
    is reused and the weights fit the target network. The batch grows where the step frees memory (at most
    ``max_factor`` x) and shrinks where it needs more (a step that reconstructs through the decoder), so the
    pretraining fits the GPU the target plans were made for.
    """
    sized = size_pretraining_batch(plans, configuration, dataset_json, trainer_class, max_factor, num_gpus)
    derived = deepcopy(plans)
    derived["plans_name"] = plans["plans_name"] + plans_suffix(trainer_class)
    derived["configurations"][configuration]["batch_size"] = sized.batch
    gpus, per_gpu = (f", {num_gpus} GPUs", " per GPU") if num_gpus > 1 else ("", "")
    over = "; one sample holds more than the vanilla step" if sized.memory_ratio > 1 else ""
    report = (f"{configuration}: batch {sized.target} -> {sized.batch}{gpus} (the {trainer_class.__name__} step, "
              f"{sized.sampler.num_views} views of crop {sized.sampler.crop_size}, "
              f"{'encoder and decoder' if sized.reconstructs else 'encoder only'}, holds {sized.per_sample:.2f}x the "
              f"feature maps of the vanilla step per sample, {sized.memory_ratio:.2f}x{per_gpu} at batch "
              f"{sized.batch}{over})")
    return derived, report


def write_pretraining_plans(folder: str, plans: dict, configuration: str, dataset_json: dict, trainer_class: type,
                            dataset: str, num_gpus: int = 1) -> tuple[str, str, str]:
    """Derives the plans, writes them into the preprocessed ``folder``; returns (plans name, report, the
    nnUNetv2_train command that pretrains ``dataset`` with them on ``num_gpus`` GPUs)."""
    derived, report = derive_pretraining_plans(plans, configuration, dataset_json, trainer_class, num_gpus=num_gpus)
    save_json(derived, join(folder, derived["plans_name"] + ".json"), sort_keys=False)
    command = f"nnUNetv2_train {dataset} {configuration} all -tr {trainer_class.__name__} -p {derived['plans_name']}"
    if num_gpus > 1:
        command += f" -num_gpus {num_gpus}"
    return derived["plans_name"], report, command

"""From a pretraining checkpoint to a target dataset: inspect, verify what transfers, export an adapted copy."""
from __future__ import annotations

import math
import os

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_cmcl.atomic import save_atomically
from nnunet_cmcl.checkpoints import channel_names_of, cmcl_record, make_record, sha256
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import channel_list, dataset_name

SKIPPED = ".seg_layers."  # nnU-Net's load_pretrained_weights never transfers these


def describe(checkpoint: dict) -> list[str]:
    """Human-readable facts of a checkpoint: trainer, plans, configuration, channels, CMCL config, metrics."""
    init = checkpoint.get("init_args", {})
    record = cmcl_record(checkpoint)
    plans = init.get("plans", {}) if isinstance(init.get("plans"), dict) else {}
    lines = [f"trainer:       {checkpoint.get('trainer_name')}",
             f"dataset:       {plans.get('dataset_name')}",
             f"plans:         {plans.get('plans_name')}",
             f"configuration: {init.get('configuration')}",
             f"fold:          {init.get('fold')}",
             f"channels:      {channel_names_of(checkpoint)}",
             f"epochs done:   {checkpoint.get('current_epoch')}",
             f"tensors:       {len(checkpoint['network_weights'])} in network_weights, "
             f"{len(record.get('heads', {}))} in the CMCL heads"]
    if record.get("config"):
        lines.append("CMCL config:   " + ", ".join(f"{k}={v}" for k, v in record["config"].items()))
    logged = checkpoint.get("logging") or {}
    last = {k: v[-1] for k, v in logged.items() if isinstance(v, list) and v and "timestamp" not in k}
    if last:
        lines.append("last epoch:    " + ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(last.items())
                                                   if isinstance(v, (int, float)) and math.isfinite(float(v))))
    return lines


def build_target_network(dataset: str, configuration: str, plans_identifier: str = "nnUNetPlans"):
    """(stock network, channel_names) that nnU-Net would fine-tune for this dataset, plans and configuration."""
    name = dataset_name(dataset)
    plans_file = join(nnUNet_preprocessed, name, plans_identifier + ".json")
    if not isfile(plans_file):
        raise CMCLInputError(f"{plans_file} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} "
                             f"(or pass the plans with -p)")
    plans = PlansManager(plans_file)
    if configuration not in plans.available_configurations:
        raise CMCLInputError(f"configuration {configuration} is not in {plans_file}; choose one of "
                             f"{plans.available_configurations}")
    config = plans.get_configuration(configuration)
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    network = nnUNetTrainer.build_network_architecture(
        plans, config, determine_num_input_channels(plans, config, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, True)
    return network, dataset_json["channel_names"]


def _is_encoder(key: str) -> bool:
    # nnU-Net's decoders hold a reference to the encoder, so its tensors appear twice in the state dict
    return key.startswith(("encoder.", "decoder.encoder."))


def _in_proj_keys(network: torch.nn.Module, state: dict) -> set[str]:
    """First-layer conv weights (encoder and the decoder's reference to it): their dim 1 is the input channels."""
    suffixes = tuple(k + ".weight" for k in getattr(network, "keys_to_in_proj", ()))
    return {k for k in state if k.endswith(suffixes)}


def check_transfer(checkpoint: dict, network: torch.nn.Module, target_channels: dict) -> tuple[list[str], list[str]]:
    """(summary lines, problem lines) of loading the checkpoint into the network as nnU-Net would."""
    source_channels = channel_names_of(checkpoint)
    problems = []
    if source_channels is not None and channel_list(source_channels) != channel_list(target_channels):
        problems.append(f"pretrained on channels ({', '.join(channel_list(source_channels))}); the target dataset has "
                        f"({', '.join(channel_list(target_channels))}): map them with `nnunet-cmcl export`")
    weights, state = checkpoint["network_weights"], network.state_dict()
    counts = {"encoder": [0, 0], "decoder": [0, 0]}
    for key, value in state.items():
        if SKIPPED in key:
            continue
        if key not in weights:
            problems.append(f"{key} is missing in the checkpoint: it comes from another architecture")
        elif tuple(weights[key].shape) != tuple(value.shape):
            problems.append(f"{key}: checkpoint {tuple(weights[key].shape)}, target {tuple(value.shape)}")
        if key.startswith("decoder.encoder."):
            continue  # the decoder's reference to the encoder: checked, not counted twice
        part = counts["encoder" if _is_encoder(key) else "decoder"]
        part[1] += 1
        part[0] += key in weights and tuple(weights[key].shape) == tuple(value.shape)
    summary = [f"{name}: {n}/{total} tensors transfer" for name, (n, total) in counts.items()]
    config = cmcl_record(checkpoint).get("config")
    if config is not None and not config.get("weight_reconstruction", 0) > 0:
        # without a reconstruction term pretraining never trains the decoder: it holds a random initialisation
        summary[1] = (f"decoder: {counts['decoder'][0]}/{counts['decoder'][1]} tensors fit but are untrained "
                      f"(pretrained without a reconstruction term); only the encoder is pretrained")
    summary.append("segmentation layers: not transferred (nnU-Net never does)")
    return summary, problems


def adapt(checkpoint: dict, network: torch.nn.Module, target_channels: dict) -> tuple[dict, list[str]]:
    """network_weights for the target network: first-layer filters mapped by channel name, every other tensor
    copied where it fits. When any decoder tensor does not fit, the whole decoder keeps the target network's
    fresh initialisation (encoder-only transfer). Returns (state dict, report lines)."""
    source_channels = channel_names_of(checkpoint)
    if source_channels is None:
        raise CMCLInputError("the checkpoint records no channel names; export needs them to map channels")
    src_names, tgt_names = channel_list(source_channels), channel_list(target_channels)
    weights, state = checkpoint["network_weights"], network.state_dict()
    in_proj = _in_proj_keys(network, state)
    lowered = [n.lower() for n in src_names]
    column = [lowered.index(n.lower()) if n.lower() in lowered else None for n in tgt_names]
    report = [f"channel {name}: " + (f"from pretrained {src_names[c]}" if c is not None else
                                     "new, initialised from the mean of the pretrained filters")
              for name, c in zip(tgt_names, column)]
    out, unfit = {}, []
    for key, value in state.items():
        source = weights.get(key)
        if key in in_proj and source is not None and source.shape[0] == value.shape[0]:
            mean = source.float().mean(dim=1)
            out[key] = torch.stack([source[:, c] if c is not None else mean.to(source.dtype) for c in column], dim=1)
        elif source is not None and source.shape == value.shape and SKIPPED not in key:
            out[key] = source.clone()
        else:
            out[key] = value.detach().clone()
            if SKIPPED not in key:
                unfit.append(key)
    unfit_encoder = [k for k in unfit if _is_encoder(k)]
    if unfit_encoder:
        raise CMCLInputError(f"{len(unfit_encoder)} encoder tensors do not fit (first: {unfit_encoder[0]}): the "
                             f"checkpoint comes from other plans; pretrain with the target's plans "
                             f"(`nnunet-cmcl prepare`)")
    if unfit:
        for key in state:
            if not _is_encoder(key):
                out[key] = state[key].detach().clone()
        report.append(f"decoder: {len(unfit)} tensors do not fit, the decoder keeps its fresh initialisation "
                      f"(encoder-only transfer)")
    else:
        report.append("decoder: transferred")
    return out, report


def export(checkpoint_path: str, checkpoint: dict, network: torch.nn.Module, target_channels: dict,
           output: str) -> list[str]:
    """Writes an adapted checkpoint that stock ``-pretrained_weights`` loads; returns the report lines."""
    if os.path.abspath(output) == os.path.abspath(checkpoint_path):
        raise CMCLInputError(f"-o {output} is the input checkpoint; write the export to a new file")
    weights, report = adapt(checkpoint, network, target_channels)
    export_record = {"source": os.path.abspath(checkpoint_path), "source_sha256": sha256(checkpoint_path),
                     "report": report}
    exported = {"network_weights": weights, "trainer_name": checkpoint.get("trainer_name"),
                "cmcl": make_record(config=cmcl_record(checkpoint).get("config"),
                                    modalities={"channel_names": target_channels}, export=export_record)}
    save_atomically(exported, output)
    return report

"""nnUNetTrainerCMCL_DAE (CMCL plus reconstruction through nnU-Net's whole U-Net) and nnUNetTrainerCMCL_Aug
(one-modality data): the disruptions, the views, the reconstruction term, and both trainers through nnU-Net's
own commands, from pretraining to fine-tuning with -pretrained_weights."""
import glob
import json
import math
import random
import re
import sys

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

from conftest import nnunet_env, plan_and_preprocess, run
from nnunet_cmcl.checkpoints import cmcl_record
from nnunet_cmcl.data.synthetic import write_phantom_dataset
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.model import stage_key
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.transfer.handoff import build_target_network


DATASET = "Dataset501_CMCLPhantom"
SEG_LAYERS = ".seg_layers."  # nnU-Net's load_pretrained_weights never transfers these


def use_env(env, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # in-process data augmentation


def is_decoder_proper(key: str) -> bool:
    """Decoder tensors that fine-tuning takes over: neither the decoder's reference to the encoder nor seg_layers."""
    return key.startswith("decoder.") and not key.startswith("decoder.encoder.") and SEG_LAYERS not in key


def make_trainer(cls, env: dict, monkeypatch):
    """A trainer of dataset 501, fold 0, built in this process as nnUNetv2_train would build it."""
    use_env(env, monkeypatch)
    folder = join(env["nnUNet_preprocessed"], DATASET)
    plans = {**load_json(join(folder, "nnUNetPlans.json")), "continue_training": False}  # nnU-Net's run_training sets it
    return cls(plans, "3d_fullres", 0, load_json(join(folder, "dataset.json")), torch.device("cpu"))


def test_reconstruction_trains_encoder_and_decoder_and_its_loss_falls_on_a_fixed_batch(phantom_env, monkeypatch,
                                                                                       tmp_path):
    # the batch too is fixed: nnU-Net's loader and transforms draw from numpy and random, which were unseeded (one
    # run in a few drew a batch whose loss fell to 0.71 of its start, not below 0.7)
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    trainer = make_trainer(nnUNetTrainerCMCL_DAE, phantom_env, monkeypatch)
    trainer.on_train_start()
    seg_layers = trainer.plain_network.decoder.seg_layers
    assert seg_layers[-1].out_channels == trainer.num_input_channels == 2  # rebuilds the image, not labels
    before = {k: v.clone() for k, v in trainer.plain_network.state_dict().items()}
    batch = next(trainer.dataloader_train)
    losses = []
    for _ in range(5):
        torch.manual_seed(0)  # the same views and disruptions each step: only the weights change
        terms = trainer.train_step(batch)
        losses.append(terms["loss_reconstruction"].item())
    stages = {f"loss_{stage_key(k)}" for k in range(1, trainer.cmcl_config.dense_stages + 1)}
    assert trainer.cmcl_config.dense_stages == 2  # the default: CMCL + reconstruction has the stage terms too
    assert set(terms) == {"loss", "loss_dense", "loss_reconstruction"} | stages  # the default's terms, no global
    assert losses[-1] < 0.7 * losses[0], losses
    after = trainer.plain_network.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("decoder.stages.") for k in changed) and any(k.startswith("decoder.transpconvs.") for k in changed)
    last = len(seg_layers) - 1
    assert f"decoder.seg_layers.{last}.weight" in changed and "decoder.seg_layers.0.weight" not in changed

    # resume: the decoder comes back; a trainer with another CMCL config refuses the checkpoint
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    resumed = make_trainer(nnUNetTrainerCMCL_DAE, phantom_env, monkeypatch)
    resumed.load_checkpoint(path)
    assert all(torch.equal(v, resumed.plain_network.state_dict()[k]) for k, v in after.items())
    with pytest.raises(CMCLInputError, match="trained with CMCL config"):
        make_trainer(nnUNetTrainerCMCL, phantom_env, monkeypatch).load_checkpoint(path)


@pytest.fixture(scope="module")
def dae_checkpoint(phantom_env) -> str:
    proc = run(["nnUNetv2_train", "501", "3d_fullres", "all", "-tr", "nnUNetTrainerCMCL_DAE_smoke", "-device", "cpu"],
               phantom_env)
    logged = json.loads(proc.stdout.split("CMCL config: ")[1].splitlines()[0])
    assert logged["weight_reconstruction"] == 1.0 and logged["mask_ratio"] > 0
    reconstruction = float(re.search(r"train_loss_reconstruction (\S+)", proc.stdout).group(1))
    assert math.isfinite(reconstruction) and reconstruction > 0
    return join(phantom_env["nnUNet_results"], DATASET, "nnUNetTrainerCMCL_DAE_smoke__nnUNetPlans__3d_fullres",
                "fold_all", "checkpoint_final.pth")


def test_dae_checkpoint_holds_the_plain_network_with_image_outputs(dae_checkpoint, phantom_env, monkeypatch):
    use_env(phantom_env, monkeypatch)
    checkpoint = torch.load(dae_checkpoint, map_location="cpu", weights_only=True)
    weights = checkpoint["network_weights"]
    stock = build_target_network("501", "3d_fullres")[0].state_dict()
    assert set(weights) == set(stock)
    differing = {k for k in stock if weights[k].shape != stock[k].shape}
    assert differing and all(SEG_LAYERS in k for k in differing)  # 2 image channels out, not 3 labels
    assert cmcl_record(checkpoint)["config"] == nnUNetTrainerCMCL_DAE.cmcl_config.to_dict()
    n_decoder = sum(is_decoder_proper(k) for k in stock)
    out = run(["nnunet-cmcl", "verify", dae_checkpoint, "-d", "501", "-c", "3d_fullres"], phantom_env).stdout
    assert f"decoder: {n_decoder}/{n_decoder} tensors transfer" in out and "OK" in out


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainer", "nnUNetTrainerCMCLFinetune"])
def test_fine_tuning_network_takes_over_encoder_and_decoder(dae_checkpoint, phantom_env, monkeypatch, trainer_name):
    use_env(phantom_env, monkeypatch)
    # the command line this reproduces (nnUNetTrainerCMCLFinetune reads -pretrained_weights from it)
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", trainer_name,
                                      "-pretrained_weights", dae_checkpoint, "-device", "cpu"])
    trainer = get_trainer_from_args("501", "3d_fullres", 0, trainer_name, device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, dae_checkpoint)  # what nnUNetv2_train -pretrained_weights runs
    weights = torch.load(dae_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    state = trainer.network.state_dict()
    decoder = [k for k in state if is_decoder_proper(k)]
    assert decoder and all(torch.equal(state[k], weights[k]) for k in decoder)
    assert all(torch.equal(v, weights[k]) for k, v in state.items() if k.startswith("encoder."))


def test_dae_checkpoint_fine_tunes_through_nnunetv2_train(dae_checkpoint, phantom_env):
    run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerCMCLFinetune_smoke", "-pretrained_weights",
         dae_checkpoint, "-device", "cpu"], phantom_env)
    fold = join(phantom_env["nnUNet_results"], DATASET, "nnUNetTrainerCMCLFinetune_smoke__nnUNetPlans__3d_fullres",
                "fold_0")
    log = open(glob.glob(join(fold, "training_log_*.txt"))[0]).read()
    recorded = json.loads(log.split("pretrained weights: ")[1].splitlines()[0])
    equal, total = map(int, recorded["encoder_tensors_equal_to_checkpoint"].split("/"))
    assert equal == total > 0 and recorded["trainer"] == "nnUNetTrainerCMCL_DAE_smoke"
    assert isfile(join(fold, "validation", "summary.json"))  # nnU-Net's own segmentation validation ran


@pytest.fixture(scope="module")
def one_modality_env(tmp_path_factory) -> dict:
    """Dataset 503: 4 one-channel ("CT") phantoms of 32^3, planned and preprocessed in its own nnU-Net folders."""
    env = nnunet_env(str(tmp_path_factory.mktemp("one_modality")))
    write_phantom_dataset(env["nnUNet_raw"], 503, name="OneModality", modalities=("CT",), shape=(32, 32, 32),
                          num_cases=4)
    plan_and_preprocess(503, env)
    return env


def test_one_modality_dataset_pretrains_with_augment_views_and_loads_into_a_stock_network(one_modality_env,
                                                                                         monkeypatch):
    proc = run(["nnUNetv2_train", "503", "3d_fullres", "all", "-tr", "nnUNetTrainerCMCL_Aug_smoke", "-device", "cpu"],
               one_modality_env)
    total, global_, dense = re.search(r"train_loss (\S+) \(global (\S+), dense (\S+)\)", proc.stdout).groups()
    assert global_ == "nan"  # the global term is off by default, in these views too
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in (total, dense)), (total, dense)
    path = join(one_modality_env["nnUNet_results"], "Dataset503_OneModality",
                "nnUNetTrainerCMCL_Aug_smoke__nnUNetPlans__3d_fullres", "fold_all", "checkpoint_final.pth")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert cmcl_record(checkpoint)["config"]["view_strategy"] == "augment"
    assert cmcl_record(checkpoint)["modalities"]["channel_names"] == {"0": "CT"}
    use_env(one_modality_env, monkeypatch)
    network = build_target_network("503", "3d_fullres")[0]
    load_pretrained_weights(network, path)  # nnU-Net's own loader, as -pretrained_weights uses it
    encoder = network.encoder.state_dict()
    assert encoder and all(torch.equal(v, checkpoint["network_weights"][f"encoder.{k}"]) for k, v in encoder.items())

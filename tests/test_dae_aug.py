"""nnUNetTrainerCMCL_DAE (CMCL plus reconstruction through nnU-Net's whole U-Net) and nnUNetTrainerCMCL_Aug
(one-modality data): the disruptions, the views, the reconstruction term, and both trainers through nnU-Net's
own commands, from pretraining to fine-tuning with -pretrained_weights."""
import glob
import json
import math
import re
import sys
from dataclasses import replace

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

from conftest import nnunet_env, plan_and_preprocess, run
from nnunet_cmcl.checkpoints import cmcl_record
from nnunet_cmcl.data.synthetic import write_phantom_dataset
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.config import LEGACY_DEFAULTS, CMCLConfig
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.disruptions import gaussian_noise, low_resolution, mask_cubes, random_intensity
from nnunet_cmcl.pretraining.model import stage_key
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.pretraining.views import ViewSampler
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


# ---- disruptions -----------------------------------------------------------------------------------------

def test_masked_cubes_are_zero_in_every_channel_and_the_rest_is_untouched():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 16, 16, 16) + 10  # no voxel is 0 before masking
    y = mask_cubes(x, ratio=0.5, block=4)
    zero = y == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # a cube is masked in every channel at once
    assert torch.equal(y[~zero], x[~zero])
    # (N, zb, zi, yb, yi, xb, xi) -> (N, zb, yb, xb, 64 voxels of the cube)
    cubes = zero[:, 0].reshape(8, 4, 4, 4, 4, 4, 4).permute(0, 1, 3, 5, 2, 4, 6).flatten(4)
    assert (cubes.all(-1) | ~cubes.any(-1)).all()  # whole 4^3 cubes, never parts of one
    assert 0.35 < cubes.all(-1).float().mean() < 0.65
    assert mask_cubes(torch.ones(2, 1, 7, 9, 5), 0.5, 4).shape == (2, 1, 7, 9, 5)  # cubes cut at the border
    assert mask_cubes(x, 0.0, 4) is x


def test_noise_reaches_every_voxel_with_a_strength_drawn_per_sample():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8, 8)
    y = gaussian_noise(x, max_std=0.5)
    std = y.flatten(1).std(dim=1)
    assert (y != 0).all()
    assert std.max() < 0.55 and std.max() > 0.4 and std.min() < 0.1  # U(0, 0.5) per sample
    assert gaussian_noise(x, 0.0) is x


def test_low_resolution_removes_detail_finer_than_its_factor_in_the_chosen_samples_only():
    torch.manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij")
    checkerboard = ((z + y + x) % 2 * 2 - 1).float()  # +-1: averages to 0 over every 2^3 block
    data = checkerboard.expand(32, 2, 8, 8, 8).clone()
    out = low_resolution(data, probability=0.5, factor=2)
    flattened = out.flatten(1).abs().amax(dim=1) < 1e-6
    untouched = (out == data).flatten(1).all(dim=1)
    assert torch.equal(flattened, ~untouched) and 0 < flattened.sum() < 32
    assert low_resolution(data, probability=1.0, factor=2).abs().amax() < 1e-6
    assert low_resolution(torch.randn(2, 1, 16, 12), 1.0, 2).shape == (2, 1, 16, 12)  # 2d configurations
    assert low_resolution(data, 0.0, 2) is data


def test_intensity_changes_keep_each_channels_voxel_order_and_differ_per_sample_and_channel():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 8, 8, 8)
    y = random_intensity(x, gamma=0.3, contrast=0.25, brightness=0.25)
    in_order_of_x = y.flatten(2).gather(2, x.flatten(2).argsort(dim=2))
    assert (in_order_of_x.diff(dim=2) >= 0).all()  # increasing: the anatomy is kept, its appearance changes
    mean_change = (y - x).flatten(2).mean(dim=2)
    assert mean_change.abs().min() > 1e-4 and len(set(mean_change.flatten().tolist())) == 12


# ---- views -----------------------------------------------------------------------------------------------

def test_removed_modalities_stay_exactly_zero_while_kept_ones_are_disrupted():
    torch.manual_seed(0)
    config = replace(CMCLConfig(), noise_std=0.5, low_resolution_probability=0.5, mask_ratio=0.3, mask_block=4,
                     flip_views=False, add_full_view=False)
    sampler = ViewSampler([[0], [1]], 2, (32, 32, 32), (8, 8, 8), config)
    data = torch.randn(4, 2, 32, 32, 32) + 10
    crops, (offsets, _, _) = sampler.crop(data)
    for k in range(sampler.num_views):
        for i in range(4):
            z, y, x = (offsets[k, i] * 8).tolist()
            assert torch.equal(crops[k * 4 + i], data[i, :, z:z + 24, y:y + 24, x:x + 24])  # the clean target
    views = sampler.make_views(crops)
    kept = views.flatten(2).abs().amax(dim=2) > 0  # (V*B, C)
    assert kept.sum(dim=1).eq(1).all()  # two modalities, two views: one channel each, the other exactly 0
    changed = (views.flatten(2)[kept] - crops.flatten(2)[kept]).abs().amax(dim=1)
    assert (changed > 0.1).all()


def test_augment_views_of_one_modality_keep_the_channel_and_stay_aligned():
    torch.manual_seed(0)
    config = replace(CMCLConfig(), view_strategy="augment", add_full_view=False, augment_brightness=0.5,
                     flip_views=False)
    sampler = ViewSampler([[0]], 1, (32, 32, 32), (8, 8, 8), config)  # one modality: fine for 'augment'
    data = torch.randn(3, 1, 32, 32, 32)
    views, (offsets, _, _) = sampler(data)
    shifts = set()
    for k in range(2):
        for i in range(3):
            z, y, x = (offsets[k, i] * 8).tolist()
            difference = views[k * 3 + i] - data[i, :, z:z + 24, y:y + 24, x:x + 24]
            # the same voxels as the crop at the view's offset, brightness shifted
            assert torch.allclose(difference, difference.flatten()[0].expand_as(difference), atol=1e-5)
            shifts.add(round(difference.flatten()[0].item(), 5))
    assert len(shifts) == 6  # every view of every sample its own change


def test_configs_of_older_checkpoints_read_back_and_unknown_keys_are_still_refused():
    names = list(CMCLConfig().to_dict())
    older = {k: v for k, v in CMCLConfig().to_dict().items()
             if names.index(k) <= names.index("collapse_std_threshold")}  # a checkpoint from before the new fields
    # features that are on by default now read back as off: the checkpoint was trained without them
    assert CMCLConfig.from_dict(older) == replace(CMCLConfig(), **LEGACY_DEFAULTS) != CMCLConfig()
    dae = nnUNetTrainerCMCL_DAE.cmcl_config
    assert CMCLConfig.from_dict(dae.to_dict()) == dae != CMCLConfig()  # resume with another config is refused
    with pytest.raises(ValueError, match="unknown CMCL config keys"):
        CMCLConfig.from_dict({**older, "reconstruction_weight": 1.0})
    with pytest.raises(ValueError, match="differ by their shift only"):
        replace(CMCLConfig(), view_strategy="augment", add_full_view=False)


# ---- the reconstruction term in nnU-Net's trainer ----------------------------------------------------------

def make_trainer(cls, env: dict, monkeypatch):
    """A trainer of dataset 501, fold 0, built in this process as nnUNetv2_train would build it."""
    use_env(env, monkeypatch)
    folder = join(env["nnUNet_preprocessed"], DATASET)
    plans = {**load_json(join(folder, "nnUNetPlans.json")), "continue_training": False}  # nnU-Net's run_training sets it
    return cls(plans, "3d_fullres", 0, load_json(join(folder, "dataset.json")), torch.device("cpu"))


def test_reconstruction_trains_encoder_and_decoder_and_its_loss_falls_on_a_fixed_batch(phantom_env, monkeypatch,
                                                                                       tmp_path):
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
    assert set(terms) == {"loss", "loss_global", "loss_dense", "loss_reconstruction"} | stages
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


# ---- through nnU-Net's commands ---------------------------------------------------------------------------

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


# ---- one modality --------------------------------------------------------------------------------------

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

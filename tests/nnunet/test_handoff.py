"""Pretrained weights into nnU-Net's fine-tuning: stock path, nnUNetTrainerCMCLFinetune, inspect, verify, export."""
import glob
import json
import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

from conftest import plan_and_preprocess, run
from nnunet_cmcl.data.synthetic import write_phantom_dataset
from nnunet_cmcl.transfer.handoff import build_target_network


N_ENCODER = 64  # tensors under encoder. in the 4-stage PlainConvUNet nnU-Net plans for the 32^3 phantoms


@pytest.fixture(scope="module")
def checkpoint(pretrained):
    return join(pretrained, "checkpoint_final.pth")


@pytest.fixture(scope="module")
def three_channel_env(phantom_env):
    """Dataset 502: same image geometry as 501 (so the same architecture), channels (T2, T1, FLAIR)."""
    write_phantom_dataset(phantom_env["nnUNet_raw"], 502, name="Reordered", num_cases=4,
                          modalities=("T2", "T1", "FLAIR"), seed=5)
    plan_and_preprocess(502, phantom_env)
    return phantom_env


def use_env(env, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])


def test_stock_trainer_loads_every_encoder_weight(phantom_env, checkpoint, monkeypatch):
    use_env(phantom_env, monkeypatch)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = get_trainer_from_args("501", "3d_fullres", 0, "nnUNetTrainer", device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, checkpoint)  # what nnUNetv2_train -pretrained_weights runs
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    encoder = trainer.network.encoder.state_dict()
    assert encoder and all(torch.equal(v, weights[f"encoder.{k}"]) for k, v in encoder.items())


def test_finetune_records_its_source_then_predicts(phantom_env, checkpoint, baseline, finetuned):
    fold = finetuned
    log = open(glob.glob(join(fold, "training_log_*.txt"))[0]).read()
    recorded = json.loads(log.split("pretrained weights: ")[1].splitlines()[0])
    assert recorded["path"] == os.path.abspath(checkpoint)
    equal, total = map(int, recorded["encoder_tensors_equal_to_checkpoint"].split("/"))
    assert equal == total == N_ENCODER
    assert recorded["cmcl_config"]["temperature"] == 0.1 and len(recorded["sha256"]) == 64
    assert "sha256" in load_json(join(fold, "debug.json"))["pretrained_source"]
    assert os.path.isfile(join(fold, "validation", "summary.json"))  # nnU-Net's own final validation ran
    # the vanilla run of the same fold keeps its own folder, untouched by the fine-tuning
    baseline_log = open(glob.glob(join(baseline, "training_log_*.txt"))[0]).read()
    assert os.path.isfile(join(baseline, "validation", "summary.json")) and "pretrained weights:" not in baseline_log
    out = run(["nnunet-cmcl", "inspect", join(fold, "checkpoint_final.pth")], phantom_env).stdout  # numpy in logs
    assert "nnUNetTrainerCMCLFinetune_test" in out

    images = join(phantom_env["nnUNet_raw"], "Dataset501_CMCLPhantom", "imagesTr")
    out = join(phantom_env["nnUNet_results"], "predictions_finetune")
    run(["nnUNetv2_predict", "-i", images, "-o", out, "-d", "501", "-c", "3d_fullres", "-f", "0",
         "-tr", "nnUNetTrainerCMCLFinetune_test", "-device", "cpu", "-npp", "1", "-nps", "1",
         "--disable_tta"], phantom_env)
    assert len(glob.glob(join(out, "*.nii.gz"))) == 8


def test_frozen_encoder_gets_no_gradient_then_trains(phantom_env, checkpoint, monkeypatch):
    use_env(phantom_env, monkeypatch)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = get_trainer_from_args("501", "3d_fullres", 0, "nnUNetTrainerCMCLFinetune_test", device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, checkpoint)
    trainer.on_train_start()
    encoder = {k: v.clone() for k, v in trainer.network.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in trainer.network.decoder.stages.state_dict().items()}
    trainer.on_train_epoch_start()  # epoch 0: frozen (freeze_encoder_epochs = 1)
    trainer.train_step(next(trainer.dataloader_train))
    assert all(p.grad is None for p in trainer.network.encoder.parameters())
    assert all(torch.equal(v, trainer.network.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, trainer.network.decoder.stages.state_dict()[k]) for k, v in decoder.items())
    encoder_params = list(trainer.network.encoder.parameters())
    assert all("momentum_buffer" not in trainer.optimizer.state[p] for p in encoder_params)
    trainer.current_epoch = 1
    trainer.on_train_epoch_start()  # trainable again
    trainer.train_step(next(trainer.dataloader_train))
    assert any(not torch.equal(v, trainer.network.encoder.state_dict()[k]) for k, v in encoder.items())


def test_scratch_control_refuses_pretrained_weights(phantom_env, checkpoint):
    proc = run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerCMCLFinetune_scratch",
                "-pretrained_weights", checkpoint, "-device", "cpu"], phantom_env, expect=1)
    assert "is a scratch control" in proc.stdout + proc.stderr


def test_inspect_reads_without_unpickling_code(checkpoint, phantom_env, tmp_path):
    out = run(["nnunet-cmcl", "inspect", checkpoint], phantom_env).stdout
    assert "nnUNetTrainerCMCL_test" in out and "3d_fullres" in out and "'T1'" in out and "temperature=0.1" in out
    assert "val_dense_retrieval_top1=" in out  # metrics that are NaN (no global term by default) are left out
    broken = tmp_path / "truncated.pth"
    broken.write_bytes(open(checkpoint, "rb").read()[:5000])
    proc = run(["nnunet-cmcl", "inspect", str(broken)], phantom_env, expect=2)
    assert "cannot be read safely" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_passes_on_its_own_dataset_and_names_channel_mismatch(checkpoint, three_channel_env):
    ok = run(["nnunet-cmcl", "verify", checkpoint, "-d", "501", "-c", "3d_fullres"], three_channel_env)
    assert f"encoder: {N_ENCODER}/{N_ENCODER} tensors transfer" in ok.stdout and "OK" in ok.stdout
    assert "tensors fit but are untrained (pretrained without a reconstruction term)" in ok.stdout  # decoder
    proc = run(["nnunet-cmcl", "verify", checkpoint, "-d", "502", "-c", "3d_fullres"], three_channel_env, expect=1)
    assert "pretrained on channels (T1, T2); the target dataset has (T2, T1, FLAIR)" in proc.stderr


def test_verify_lists_plans_mismatch(checkpoint, resenc_env):
    proc = run(["nnunet-cmcl", "verify", checkpoint, "-d", "501", "-c", "3d_fullres", "-p", "nnUNetResEncUNetMPlans"],
               resenc_env, expect=1)
    assert "missing in the checkpoint" in proc.stderr


def test_export_maps_channels_by_name_and_loads_with_stock_loader(checkpoint, three_channel_env, monkeypatch,
                                                                   tmp_path):
    output = str(tmp_path / "for_502.pth")
    run(["nnunet-cmcl", "export", checkpoint, "-d", "502", "-c", "3d_fullres", "-o", output], three_channel_env)
    use_env(three_channel_env, monkeypatch)
    network, _ = build_target_network("502", "3d_fullres")
    load_pretrained_weights(network, output)
    key = "encoder.stages.0.0.convs.0.conv.weight"
    source = torch.load(checkpoint, map_location="cpu", weights_only=True)["network_weights"][key]  # (T1, T2)
    loaded = network.state_dict()[key]  # (T2, T1, FLAIR)
    assert torch.equal(loaded[:, 0], source[:, 1]) and torch.equal(loaded[:, 1], source[:, 0])
    assert torch.allclose(loaded[:, 2], source.mean(dim=1))
    assert torch.equal(network.state_dict()["encoder.stages.2.0.convs.1.conv.weight"],
                       torch.load(checkpoint, weights_only=True)["network_weights"]["encoder.stages.2.0.convs.1.conv.weight"])
    ok = run(["nnunet-cmcl", "verify", output, "-d", "502", "-c", "3d_fullres"], three_channel_env)
    assert "OK" in ok.stdout


def test_prepare_unlabeled_dataset_then_pretrain_and_finetune_target(phantom_env):
    write_phantom_dataset(phantom_env["nnUNet_raw"], 601, name="Unlabeled", num_cases=4, with_labels=False, seed=9)
    out = run(["nnunet-cmcl", "prepare", "-s", "501", "-t", "601", "-np", "1"], phantom_env).stdout
    assert "4 unlabeled cases preprocessed" in out and "-p nnUNetPlans_CMCL" in out
    pre = join(phantom_env["nnUNet_preprocessed"], "Dataset601_Unlabeled")
    target_plans = load_json(join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom", "nnUNetPlans.json"))
    derived = load_json(join(pre, "nnUNetPlans_CMCL.json"))
    conf, target_conf = derived["configurations"]["3d_fullres"], target_plans["configurations"]["3d_fullres"]
    assert conf["architecture"] == target_conf["architecture"] and conf["data_identifier"] == target_conf["data_identifier"]
    assert conf["batch_size"] > target_conf["batch_size"]  # the encoder-only step frees memory for more samples

    run(["nnUNetv2_train", "601", "3d_fullres", "all", "-tr", "nnUNetTrainerCMCL_smoke", "-p", "nnUNetPlans_CMCL",
         "-device", "cpu"], phantom_env)
    checkpoint = join(phantom_env["nnUNet_results"], "Dataset601_Unlabeled",
                      "nnUNetTrainerCMCL_smoke__nnUNetPlans_CMCL__3d_fullres", "fold_all", "checkpoint_final.pth")
    assert "OK" in run(["nnunet-cmcl", "verify", checkpoint, "-d", "501", "-c", "3d_fullres"], phantom_env).stdout
    # fine-tuned with modality dropout: the CMCL dropout trainer end to end from the pool's checkpoint
    out = run(["nnUNetv2_train", "501", "3d_fullres", "1", "-tr", "nnUNetTrainerCMCLFinetune_modalityDropout_smoke",
               "-pretrained_weights", checkpoint, "-device", "cpu"], phantom_env).stdout
    fold = join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom",
                "nnUNetTrainerCMCLFinetune_modalityDropout_smoke__nnUNetPlans__3d_fullres", "fold_1")
    assert "modality dropout: probability 0.1 per training sample" in out and "2 proper non-empty subsets" in out
    settings = load_json(join(fold, "cmcl_settings.json"))["settings"]
    assert settings["modality_dropout_probability"] == 0.1
    log = open(join(fold, next(f for f in os.listdir(fold) if f.startswith("training_log")))).read()
    assert f'"path": "{checkpoint}"' in log and "modality dropout this epoch:" in log  # the weights' source
    assert os.path.isfile(join(fold, "checkpoint_final.pth"))


def test_prepare_refuses_other_channel_order(phantom_env):
    write_phantom_dataset(phantom_env["nnUNet_raw"], 602, name="Swapped", num_cases=2, modalities=("T2", "T1"),
                          with_labels=False)
    # -pl: the deprecated spelling of -p still works, with a warning
    proc = run(["nnunet-cmcl", "prepare", "-s", "501", "-t", "602", "-pl", "nnUNetPlans"], phantom_env, expect=2)
    assert "-pl is deprecated" in proc.stderr
    assert "has channels (T2, T1), target Dataset501_CMCLPhantom has (T1, T2)" in proc.stderr
    proc = run(["nnunet-cmcl", "prepare", "-s", "501", "-t", "602", "-p", "A", "-pl", "B"], phantom_env, expect=2)
    assert "-p A and -pl B disagree" in proc.stderr
    assert not os.path.exists(join(phantom_env["nnUNet_preprocessed"], "Dataset602_Swapped", "nnUNetPlans.json"))

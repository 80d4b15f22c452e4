"""Pretraining plans sized for each trainer's step, from the target's real nnU-Net plans."""
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import run
from nnunet_cmcl.plans.pretraining import derive_pretraining_plans
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


def test_encoder_only_step_gets_a_larger_batch_and_the_reconstructing_step_does_not(phantom_env):
    folder = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom")
    plans, dataset_json = load_json(join(folder, "nnUNetPlans.json")), load_json(join(folder, "dataset.json"))
    batch = plans["configurations"]["3d_fullres"]["batch_size"]
    cmcl, report = derive_pretraining_plans(plans, "3d_fullres", dataset_json, nnUNetTrainerCMCL)
    dae, dae_report = derive_pretraining_plans(plans, "3d_fullres", dataset_json, nnUNetTrainerCMCL_DAE)
    assert cmcl["plans_name"] == "nnUNetPlans_CMCL" and dae["plans_name"] == "nnUNetPlans_CMCL_DAE"
    assert cmcl["configurations"]["3d_fullres"]["batch_size"] > batch  # encoder only, on sub-crops
    # two full U-Net passes on crops of 0.8 x the patch's side hold about as much as one vanilla pass
    assert dae["configurations"]["3d_fullres"]["batch_size"] == batch
    assert "encoder only" in report and "encoder and decoder" in dae_report
    assert cmcl["configurations"]["3d_fullres"]["data_identifier"] == plans["configurations"]["3d_fullres"]["data_identifier"]


def test_pretrain_plans_command_finds_a_variant_through_nnUNet_extTrainer(phantom_env):
    # nnUNetTrainerCMCL_DAE_smoke lives in tests/ext_trainers, as a user's own variant would
    out = run(["nnunet-cmcl", "pretrain-plans", "-d", "501", "-tr", "nnUNetTrainerCMCL_DAE_smoke"], phantom_env).stdout
    assert "encoder and decoder" in out and "-tr nnUNetTrainerCMCL_DAE_smoke -p nnUNetPlans_CMCL_DAE_smoke" in out
    written = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom", "nnUNetPlans_CMCL_DAE_smoke.json")
    assert load_json(written)["plans_name"] == "nnUNetPlans_CMCL_DAE_smoke"
    proc = run(["nnunet-cmcl", "pretrain-plans", "-d", "501", "-tr", "nnUNetTrainer"], phantom_env, expect=2)
    assert "nnUNetTrainer is not a pretraining trainer" in proc.stderr

"""Pretraining plans sized for each trainer's step, from the target's real nnU-Net plans."""
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import run
from nnunet_cmcl.plans.pretraining import derive_pretraining_plans
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


def test_encoder_only_step_gets_a_larger_batch_and_the_reconstructing_step_a_smaller_one(phantom_env):
    folder = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom")
    plans, dataset_json = load_json(join(folder, "nnUNetPlans.json")), load_json(join(folder, "dataset.json"))
    batch = plans["configurations"]["3d_fullres"]["batch_size"]
    cmcl, report = derive_pretraining_plans(plans, "3d_fullres", dataset_json, nnUNetTrainerCMCL)
    dae, dae_report = derive_pretraining_plans(plans, "3d_fullres", dataset_json, nnUNetTrainerCMCL_DAE)
    assert cmcl["plans_name"] == "nnUNetPlans_CMCL" and dae["plans_name"] == "nnUNetPlans_CMCL_DAE"
    assert cmcl["configurations"]["3d_fullres"]["batch_size"] > batch  # encoder only, on sub-crops
    # three full U-Net passes on crops of 0.8 x the patch's side hold more than one vanilla pass: the batch shrinks
    # so that the step fits the vanilla step's memory
    assert dae["configurations"]["3d_fullres"]["batch_size"] < batch
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


def test_pretrain_plans_splits_the_batch_over_the_gpus_and_says_what_it_does(phantom_env):
    help_text = run(["nnunet-cmcl", "pretrain-plans", "--help"], phantom_env).stdout
    assert "vanilla step" in help_text and "-num_gpus" in help_text
    out = run(["nnunet-cmcl", "pretrain-plans", "-d", "501", "-tr", "nnUNetTrainerCMCL_DAE", "-num_gpus", "2"],
              phantom_env).stdout
    assert "2 GPUs" in out and "-p nnUNetPlans_CMCL_DAE -num_gpus 2" in out
    written = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom", "nnUNetPlans_CMCL_DAE.json")
    assert load_json(written)["configurations"]["3d_fullres"]["batch_size"] % 2 == 0
    # 4 x the plans' batch of 2 at most: no sample for 9 of 16 GPUs
    proc = run(["nnunet-cmcl", "pretrain-plans", "-d", "501", "-num_gpus", "16"], phantom_env, expect=2)
    assert "-num_gpus 16:" in proc.stderr and "give -num_gpus 8 or less" in proc.stderr


def test_the_gpu_preset_pretrains_each_pretrainer_with_its_own_plans(phantom_env, tmp_path, monkeypatch):
    import shutil

    from batchgenerators.utilities.file_and_folder_operations import save_json

    from nnunet_cmcl.study.experiment import command_of
    from nnunet_cmcl.study.plan import plan_runs
    from nnunet_cmcl.study.preset import GPU_ARMS, with_pretraining_plans

    # a copy of 501's plans and dataset.json with a split of its own: the shared dataset stays as it is
    source = join(phantom_env["nnUNet_preprocessed"], "Dataset501_CMCLPhantom")
    folder = tmp_path / "preprocessed" / "Dataset501_CMCLPhantom"
    folder.mkdir(parents=True)
    for name in ("nnUNetPlans.json", "dataset.json"):
        shutil.copyfile(join(source, name), folder / name)
    save_json([{"train": ["a", "b"], "val": ["c"]}], str(folder / "splits_final.json"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    arms = with_pretraining_plans(list(GPU_ARMS), "Dataset501_CMCLPhantom", "3d_fullres", "nnUNetPlans")
    assert {a.pretrainer: a.pretraining_plans for a in arms if a.pretrainer} == {
        "nnUNetTrainerCMCL": "nnUNetPlans_CMCL", "nnUNetTrainerCMCL_recon": "nnUNetPlans_CMCL_recon",
        "nnUNetTrainerCMCL_DAE": "nnUNetPlans_CMCL_DAE"}
    assert (folder / "nnUNetPlans_CMCL_recon.json").is_file()
    runs = plan_runs("Dataset501_CMCLPhantom", "3d_fullres", "nnUNetPlans", [0], [1.0], 0, arms)
    for run_ in runs:
        command = command_of(run_, "501", "3d_fullres", "nnUNetPlans", "cuda")
        plans = command[command.index("-p") + 1]
        if run_.kind == "pretraining":
            assert plans == "nnUNetPlans_" + run_.trainer.removeprefix("nnUNetTrainer")
            assert f"{run_.trainer}__{plans}__3d_fullres" in run_.fold_folder
        else:
            assert plans == "nnUNetPlans" and f"{run_.trainer}__nnUNetPlans__3d_fullres" in run_.fold_folder
        if run_.pretrained:  # the fine-tuning starts from the pretraining trained with its own plans
            assert "__nnUNetPlans_CMCL" in run_.pretrained


def test_prepare_refuses_a_batch_for_too_many_gpus_before_preprocessing(phantom_env):
    import os

    from nnunet_cmcl.data.synthetic import write_phantom_dataset

    write_phantom_dataset(phantom_env["nnUNet_raw"], 613, name="ManyGPUs", num_cases=2, with_labels=False, seed=3)
    proc = run(["nnunet-cmcl", "prepare", "-s", "501", "-t", "613", "-np", "1", "-num_gpus", "16"], phantom_env,
               expect=2)
    assert "-num_gpus 16:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.isdir(join(phantom_env["nnUNet_preprocessed"], "Dataset613_ManyGPUs"))  # nothing written

"""CMCL pretraining through nnU-Net's own command, then the checkpoint into a stock nnU-Net network."""
import glob
import os

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

TRAINER = "nnUNetTrainerCMCL_test"  # tests/ext_trainers: 2 epochs x 30 iterations, 6 validation iterations


@pytest.fixture(scope="module")
def fold_folder(pretrained):
    return pretrained


def test_outputs_of_a_pretraining_run(fold_folder):
    assert os.path.isfile(join(fold_folder, "checkpoint_final.pth"))
    assert os.path.isfile(join(fold_folder, "checkpoint_best.pth"))
    assert not os.path.exists(join(fold_folder, "checkpoint_latest.pth"))  # removed at the end, as nnU-Net does
    assert not glob.glob(join(fold_folder, "*.tmp*"))  # atomic saves leave nothing behind
    with open(join(fold_folder, "progress.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    log = open(glob.glob(join(fold_folder, "training_log_*.txt"))[0]).read()
    assert "CMCL config:" in log and "retrieval top-1" in log
    assert not os.path.exists(join(fold_folder, "validation", "summary.json"))


def test_checkpoint_loads_into_stock_network_with_nnunets_loader(fold_folder, phantom_env):
    checkpoint_file = join(fold_folder, "checkpoint_final.pth")
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    plans = PlansManager(join(fold_folder, "..", "plans.json"))
    configuration = plans.get_configuration("3d_fullres")
    dataset_json = load_json(join(fold_folder, "..", "dataset.json"))
    network = nnUNetTrainer.build_network_architecture(plans, configuration, 2,
                                                       plans.get_label_manager(dataset_json).num_segmentation_heads)
    assert set(checkpoint["network_weights"]) == set(network.state_dict())
    load_pretrained_weights(network, checkpoint_file)
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(value, checkpoint["network_weights"][f"encoder.{key}"])
    assert all(torch.isfinite(v).all() for v in checkpoint["network_weights"].values())
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 2


def test_retrieval_rises_well_above_chance(fold_folder):
    logged = torch.load(join(fold_folder, "checkpoint_final.pth"), map_location="cpu",
                        weights_only=False)["logging"]
    dense, global_ = logged["val_dense_retrieval_top1"], logged["val_retrieval_top1"]
    losses = logged["train_losses"]
    print(f"\nCMCL e2e: train loss {np.round(losses, 3).tolist()}, global top-1 {np.round(global_, 3).tolist()}, "
          f"dense top-1 {np.round(dense, 3).tolist()}")
    assert len(dense) == len(global_) == 2
    # dense keys: the 8 locations the views' overlap offers on the 3^3 bottleneck (24^3 views of the 32^3 patch), of
    # the own patch and of the other-case patch of the batch -> chance <= 1/8. Mirrored views and locations inside
    # the image took away matching by position and by the padding's outline: 30 steps reached 0.42 and 60 steps
    # 0.55 on this phantom, one run (on a 40^3 phantom, 27 locations: 0.16-0.29 and 0.22-0.40 over two runs, so a
    # run's value varies much; 0.73-0.94 with those shortcuts open). The bound is twice the chance.
    assert max(dense) > 2 / 8
    # the default has no global term, hence no global retrieval to measure (tests/nnunet/test_trainer.py trains the term)
    assert all(np.isnan(global_))
    assert losses[-1] < losses[0]

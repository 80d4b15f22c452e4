"""Short CMCL runs for the tests: found by nnU-Net through nnUNet_extTrainer like the shipped trainers."""
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_test(nnUNetTrainerCMCL):
    # 60 steps: the dense retrieval passes chance by far within them (on the 32^3 phantom 30 steps reached 0.42,
    # 60 steps 0.55 of top-1 against a chance of at most 1/8); the shared fixture of most nnU-Net tests, so its
    # budget is a large share of the suite's time (an epoch is about 11 s on 2 cores, 30 s on a 40^3 phantom)
    overrides = {"num_epochs": 2, "num_iterations_per_epoch": 30, "num_val_iterations_per_epoch": 6,
                 "save_every": 2}


class nnUNetTrainerCMCL_smoke(nnUNetTrainerCMCL):
    """One epoch of 4 iterations: for tests of the plumbing, not of learning."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 4, "num_val_iterations_per_epoch": 2}


class nnUNetTrainerCMCL_resume(nnUNetTrainerCMCL):
    """A checkpoint after every epoch: for the kill-and-resume test."""
    overrides = {"num_epochs": 4, "num_iterations_per_epoch": 6, "num_val_iterations_per_epoch": 2, "save_every": 1}

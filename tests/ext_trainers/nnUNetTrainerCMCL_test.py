"""Short CMCL runs for the tests: found by nnU-Net through nnUNet_extTrainer like the shipped trainers."""
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_test(nnUNetTrainerCMCL):
    # 60 steps: the dense retrieval passes chance by far within them (30 steps reached 0.29, 60 steps 0.40 of
    # top-1 against a chance of 1/27); the shared fixture of most nnU-Net tests, so its budget is a large share of
    # the suite's time (a third epoch cost about 2 minutes on 2 cores)
    overrides = {"num_epochs": 2, "num_iterations_per_epoch": 30, "num_val_iterations_per_epoch": 6,
                 "save_every": 2}


class nnUNetTrainerCMCL_smoke(nnUNetTrainerCMCL):
    """One epoch of 4 iterations: for tests of the plumbing, not of learning."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 4, "num_val_iterations_per_epoch": 2}


class nnUNetTrainerCMCL_resume(nnUNetTrainerCMCL):
    """A checkpoint after every epoch: for the kill-and-resume test."""
    overrides = {"num_epochs": 4, "num_iterations_per_epoch": 6, "num_val_iterations_per_epoch": 2, "save_every": 1}

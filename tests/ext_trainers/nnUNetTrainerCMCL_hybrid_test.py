"""Short runs of the reconstruction hybrid and the one-modality trainer for the tests (found through nnUNet_extTrainer)."""
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.variants import nnUNetTrainerCMCL_Aug
from nnunet_cmcl.study.unmirrored import UnmirroredFinalValidation
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune

SMOKE = {"num_epochs": 1, "num_iterations_per_epoch": 4, "num_val_iterations_per_epoch": 2}


class nnUNetTrainerCMCL_DAE_smoke(nnUNetTrainerCMCL_DAE):
    overrides = SMOKE


class nnUNetTrainerCMCL_Aug_smoke(nnUNetTrainerCMCL_Aug):
    overrides = SMOKE


class nnUNetTrainerCMCLFinetune_smoke(UnmirroredFinalValidation, nnUNetTrainerCMCLFinetune):
    """One epoch of 2 iterations, then nnU-Net's own final validation (unmirrored): the -pretrained_weights path,
    not learning."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1}

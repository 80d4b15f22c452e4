"""Short runs with modality dropout for the tests, found by nnU-Net through nnUNet_extTrainer; their final
validation and predictions unmirrored, as the other test trainers'."""
from nnunet_cmcl.study.unmirrored import UnmirroredFinalValidation
from nnunet_cmcl.transfer.modality_dropout import (nnUNetTrainerCMCLFinetune_modalityDropout,
                                                   nnUNetTrainerSeeded_modalityDropout)


class nnUNetTrainerSeeded_modalityDropout_smoke(UnmirroredFinalValidation, nnUNetTrainerSeeded_modalityDropout):
    """The seeded baseline with modality dropout (the default probability), one epoch of 3 iterations."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 1}


class nnUNetTrainerCMCLFinetune_modalityDropout_smoke(UnmirroredFinalValidation,
                                                     nnUNetTrainerCMCLFinetune_modalityDropout):
    """Fine-tuning from a CMCL checkpoint with modality dropout (the default probability), one epoch of 3
    iterations."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 1}

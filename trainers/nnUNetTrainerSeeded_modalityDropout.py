from nnunet_cmcl.transfer.modality_dropout import nnUNetTrainerSeeded_modalityDropout  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

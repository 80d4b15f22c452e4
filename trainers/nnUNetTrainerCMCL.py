from nnunet_cmcl.trainer import nnUNetTrainerCMCL  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

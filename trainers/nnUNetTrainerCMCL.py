from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

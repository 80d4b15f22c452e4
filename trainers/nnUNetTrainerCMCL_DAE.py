from nnunet_cmcl.dae import nnUNetTrainerCMCL_DAE  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

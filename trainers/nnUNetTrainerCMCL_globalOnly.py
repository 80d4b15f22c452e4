from nnunet_cmcl.variants import nnUNetTrainerCMCL_globalOnly  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

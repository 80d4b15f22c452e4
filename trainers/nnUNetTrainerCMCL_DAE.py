from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

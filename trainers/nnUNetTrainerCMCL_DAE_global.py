from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE_global  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

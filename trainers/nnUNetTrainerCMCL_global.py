from nnunet_cmcl.pretraining.variants import nnUNetTrainerCMCL_global  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

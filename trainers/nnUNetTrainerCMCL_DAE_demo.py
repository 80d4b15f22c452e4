from nnunet_cmcl.demo import nnUNetTrainerCMCL_DAE_demo  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

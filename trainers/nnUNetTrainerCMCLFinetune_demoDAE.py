from nnunet_cmcl.demo import nnUNetTrainerCMCLFinetune_demoDAE  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

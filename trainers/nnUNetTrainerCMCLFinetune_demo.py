from nnunet_cmcl.demo import nnUNetTrainerCMCLFinetune_demo  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

from nnunet_cmcl.demo import nnUNetTrainerVanilla_demo  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

from nnunet_cmcl.seeding import nnUNetTrainerSeeded  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

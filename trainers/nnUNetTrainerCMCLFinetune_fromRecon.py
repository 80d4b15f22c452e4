from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_fromRecon  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

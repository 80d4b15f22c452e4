from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_warmup  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

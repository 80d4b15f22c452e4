from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_warmup_scratch  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

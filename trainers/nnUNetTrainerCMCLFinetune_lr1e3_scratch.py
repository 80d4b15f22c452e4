from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_lr1e3_scratch  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

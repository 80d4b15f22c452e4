from nnunet_cmcl.transfer.finetune_variants import nnUNetTrainerCMCLFinetune_fromDAE  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

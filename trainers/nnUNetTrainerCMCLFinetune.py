from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

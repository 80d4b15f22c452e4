from nnunet_cmcl.study.demo_trainers import nnUNetTrainerCMCLFinetune_fromDAE_demo  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

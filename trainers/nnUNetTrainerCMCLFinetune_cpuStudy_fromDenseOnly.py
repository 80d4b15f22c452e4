from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCLFinetune_cpuStudy_fromDenseOnly  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCLFinetune_cpuStudy_noWarmup_fromStages  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

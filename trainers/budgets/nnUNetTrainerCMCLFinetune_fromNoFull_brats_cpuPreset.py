from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCLFinetune_fromNoFull_brats_cpuPreset  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

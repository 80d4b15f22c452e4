from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCLFinetune_fromGlobal_brats_cpuPreset  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

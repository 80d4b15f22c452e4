from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCL_bottleneck_brats_cpuPreset  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

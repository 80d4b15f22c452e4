from nnunet_cmcl.study.preset_trainers import nnUNetTrainerSeeded_brats2x_cpuPreset  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

from nnunet_cmcl.study.preset_trainers import nnUNetTrainerSeeded_modalityDropout_p25_brats_cpuPreset  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

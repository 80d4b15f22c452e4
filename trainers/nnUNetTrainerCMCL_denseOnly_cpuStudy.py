from nnunet_cmcl.study.preset_trainers import nnUNetTrainerCMCL_denseOnly_cpuStudy  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

from nnunet_cmcl.study.demo_trainers import nnUNetTrainerCMCL_Aug_demo  # noqa: F401  (found by nnU-Net through nnUNet_extTrainer)

"""Trainers with the budgets of the CPU preset (``_cpuPreset``) and the demo (``_demo``): for the study and the
demo, not for your own runs. nnU-Net's class finder searches this sub-folder of nnUNet_extTrainer too."""

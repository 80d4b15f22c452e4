"""Planning and running the study with nnU-Net's commands: label-fraction folds, the runs of a study, the
experiment runner and its progress, the workdir set-up, the presets and the demo (evaluation/ reads the results)."""

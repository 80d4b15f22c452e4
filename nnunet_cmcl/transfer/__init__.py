"""From pretraining to segmentation: the fine-tuning trainer, inspect/verify/export of checkpoints, prepare."""

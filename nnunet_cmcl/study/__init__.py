"""Did pretraining pay? Label-fraction folds, the experiment runner, paired comparison, reports, missing-modality
evaluation and the demo."""

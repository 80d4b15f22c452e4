"""The folder for nnUNet_extTrainer: one thin module per public trainer class (see `nnunet-cmcl trainers`); the
study's and the demo's budgets are in budgets/."""

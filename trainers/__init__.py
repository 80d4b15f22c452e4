"""The folder for nnUNet_extTrainer: one thin module per public trainer class (see `nnunet-cmcl trainer-path`)."""

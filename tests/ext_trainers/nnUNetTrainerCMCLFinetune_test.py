"""Short segmentation runs for the tests: fine-tuning from CMCL and the vanilla baseline with the same budget.
Their final validation (and any prediction from their checkpoints) is unmirrored, as the study presets' is: one
pass per patch instead of 8 in 3d, for every arm alike."""
import torch

from nnunet_cmcl.seeding import nnUNetTrainerSeeded
from nnunet_cmcl.study.unmirrored import UnmirroredFinalValidation
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune

BUDGET = {"num_epochs": 2, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 3}


class nnUNetTrainerCMCLFinetune_test(UnmirroredFinalValidation, nnUNetTrainerCMCLFinetune):
    warmup_fraction = 0.25  # 5 of the 20 iterations
    freeze_encoder_epochs = 1
    overrides = BUDGET


class nnUNetTrainer_test(UnmirroredFinalValidation, nnUNetTrainerSeeded):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        vars(self).update(BUDGET)


class nnUNetTrainerSeeded_smoke(UnmirroredFinalValidation, nnUNetTrainerSeeded):
    """nnU-Net's trainer with the fold's seed, one epoch of 3 iterations: for tests of seeding and the study."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        vars(self).update({"num_epochs": 1, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 1})


class nnUNetTrainerCMCLFinetune_default_smoke(UnmirroredFinalValidation, nnUNetTrainerCMCLFinetune):
    """The fine-tuning trainer's default schedule with nnUNetTrainerSeeded_smoke's budget: from random weights it
    must train exactly what nnU-Net's trainer trains."""
    overrides = {"num_epochs": 1, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 1}

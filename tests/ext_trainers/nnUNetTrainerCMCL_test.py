"""A short CMCL run for the tests: found by nnU-Net through nnUNet_extTrainer like the shipped trainers."""
import torch

from nnunet_cmcl.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_test(nnUNetTrainerCMCL):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5
        self.num_iterations_per_epoch = 40
        self.num_val_iterations_per_epoch = 10
        self.save_every = 2

"""Only pretraining trainers are found for pretraining plans."""
import pytest

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.plans.pretraining import find_pretraining_trainer
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE


def test_only_pretraining_trainers_are_found():
    assert find_pretraining_trainer("nnUNetTrainerCMCL_DAE") is nnUNetTrainerCMCL_DAE
    for name in ("nnUNetTrainer", "nnUNetTrainerCMCLFinetune", "nnUNetTrainerNoSuchThing"):
        with pytest.raises(CMCLInputError, match="not a pretraining trainer"):
            find_pretraining_trainer(name)

"""CMCLConfig: configs of older checkpoints read back, unknown keys and views that differ by their shift only are refused."""
from dataclasses import replace

import pytest

from nnunet_cmcl.pretraining.config import LEGACY_DEFAULTS, CMCLConfig
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE


def test_configs_of_older_checkpoints_read_back_and_unknown_keys_are_still_refused():
    names = list(CMCLConfig().to_dict())
    older = {k: v for k, v in CMCLConfig().to_dict().items()
             if names.index(k) <= names.index("collapse_std_threshold")}  # a checkpoint from before the new fields
    # features that are on by default now read back as off: the checkpoint was trained without them
    assert CMCLConfig.from_dict(older) == replace(CMCLConfig(), **LEGACY_DEFAULTS) != CMCLConfig()
    dae = nnUNetTrainerCMCL_DAE.cmcl_config
    assert CMCLConfig.from_dict(dae.to_dict()) == dae != CMCLConfig()  # resume with another config is refused
    with pytest.raises(ValueError, match="unknown CMCL config keys"):
        CMCLConfig.from_dict({**older, "reconstruction_weight": 1.0})
    with pytest.raises(ValueError, match="differ by their shift only"):
        replace(CMCLConfig(), view_strategy="augment", add_full_view=False)

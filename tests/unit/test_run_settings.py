"""A run's recorded settings: what the plugin's trainers write into their fold folder, and what `experiment` compares
before it skips or continues a run."""
import json
import os
from dataclasses import replace

from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE, nnUNetTrainerCMCL_DAE_global
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.run_settings import SETTINGS_FILE, settings_mismatch, trainer_settings
from nnunet_cmcl.study.preset_trainers import SEGMENTATION_BUDGET, nnUNetTrainerSeeded_cpuPreset


def _write(cls: type, folder: str) -> None:
    with open(os.path.join(folder, SETTINGS_FILE), "w") as f:
        json.dump(trainer_settings(cls), f)


def test_settings_hold_the_cmcl_config_and_the_budget_but_not_nnunets_defaults():
    settings = trainer_settings(nnUNetTrainerCMCL_DAE)["settings"]
    assert settings["cmcl_config"]["weight_reconstruction"] == 1.0 and settings["cmcl_config"]["weight_global"] == 0
    assert trainer_settings(nnUNetTrainerCMCL_DAE_global)["settings"]["cmcl_config"]["weight_global"] == 1.0
    seeded = trainer_settings(nnUNetTrainerSeeded_cpuPreset)
    assert seeded["trainer"] == "nnUNetTrainerSeeded_cpuPreset" and seeded["settings"]["overrides"] == SEGMENTATION_BUDGET
    assert "cmcl_config" not in seeded["settings"]  # nnU-Net's own classes add nothing: their defaults are nnU-Net's


def test_a_changed_default_is_a_mismatch_that_names_the_setting(tmp_path):
    folder = str(tmp_path)
    assert "no cmcl_settings.json" in settings_mismatch(nnUNetTrainerCMCL, folder)
    _write(nnUNetTrainerCMCL, folder)
    assert settings_mismatch(nnUNetTrainerCMCL, folder) is None
    # the same name with another default, as after a release that changed it
    changed = type("nnUNetTrainerCMCL", (nnUNetTrainerCMCL,),
                   {"cmcl_config": replace(nnUNetTrainerCMCL.cmcl_config, weight_global=1.0)})
    assert "cmcl_config.weight_global: 0.0 -> 1.0" in settings_mismatch(changed, folder)
    budget = type("nnUNetTrainerCMCL", (nnUNetTrainerCMCL,), {"overrides": {"num_epochs": 3}})
    assert "overrides.num_epochs: None -> 3" in settings_mismatch(budget, folder)
    assert "trained by nnUNetTrainerCMCL, not nnUNetTrainerCMCL_DAE" in settings_mismatch(nnUNetTrainerCMCL_DAE,
                                                                                          folder)

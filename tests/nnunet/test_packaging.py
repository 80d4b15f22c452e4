"""The package as users get it: console script, and trainers found by nnU-Net after a non-editable install."""
import glob
import os
import subprocess
import sys

from conftest import run


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wheel_install_ships_trainers_that_nnunet_finds(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), REPO],
                   check=True, capture_output=True)
    wheel = glob.glob(str(tmp_path / "dist" / "nnunet_cmcl-*.whl"))[0]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
                   check=True, capture_output=True)
    # run from outside the repository so that only the installed copy can be imported
    env = {**os.environ, "PYTHONPATH": str(target)}
    folder = subprocess.run([sys.executable, "-c", "from nnunet_cmcl.naming import trainer_path; print(trainer_path())"],
                            env=env, cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    assert folder.startswith(str(target)) and os.path.isfile(os.path.join(folder, "nnUNetTrainerCMCL.py"))
    find = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
            "c = f('nnUNetTrainerCMCL_globalOnly'); print(c.__module__, c.cmcl_config.weight_dense)")
    out = subprocess.run([sys.executable, "-c", find], env={**env, "nnUNet_extTrainer": folder}, cwd=tmp_path,
                         check=True, capture_output=True, text=True).stdout
    assert "nnunet_cmcl.pretraining.variants 0.0" in out

"""Pretraining survives kills: a real nnUNetv2_train killed with SIGKILL resumes with --c; saves are atomic."""
import os
import signal
import subprocess
import time

import torch

from conftest import console_script, run
from nnunet_cmcl.checkpoints import cmcl_record
from nnunet_cmcl.checkpoints import load_checkpoint_safely


def test_sigkill_after_first_checkpoint_then_resume(phantom_env, tmp_path):
    command = ["nnUNetv2_train", "501", "3d_fullres", "all", "-tr", "nnUNetTrainerCMCL_resume", "-device", "cpu"]
    folder = os.path.join(phantom_env["nnUNet_results"], "Dataset501_CMCLPhantom",
                          "nnUNetTrainerCMCL_resume__nnUNetPlans__3d_fullres", "fold_all")
    latest = os.path.join(folder, "checkpoint_latest.pth")
    log = tmp_path / "first_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([console_script(command[0]), *command[1:]], env=phantom_env, stdout=out,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)  # own process group: the kill takes the loader workers too
    deadline = time.time() + 600
    while not os.path.isfile(latest) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isfile(latest), f"no checkpoint_latest.pth was written:\n{log.read_text()[-3000:]}"
    killed = load_checkpoint_safely(latest)  # complete, whatever moment the kill hit
    assert 1 <= killed["current_epoch"] < 4 and not os.path.isfile(os.path.join(folder, "checkpoint_final.pth"))

    out = run([*command, "--c"], phantom_env).stdout
    assert f"Epoch {killed['current_epoch']}\n" in out and "Epoch 0\n" not in out  # it went on, did not restart
    final = load_checkpoint_safely(os.path.join(folder, "checkpoint_final.pth"))
    assert final["current_epoch"] == 4
    assert len(final["logging"]["train_losses"]) == 4  # the logger's history came back with the checkpoint
    assert cmcl_record(final)["config"] == cmcl_record(killed)["config"]
    assert all(torch.isfinite(v).all() for v in final["network_weights"].values() if v.is_floating_point())
    assert any(not torch.equal(cmcl_record(final)["heads"][k], v) for k, v in cmcl_record(killed)["heads"].items())
    state = final["optimizer_state"]["state"]
    assert state and all(s["step"] > killed["optimizer_state"]["state"][i]["step"] for i, s in state.items())

"""Atomic saves: a save interrupted while writing or before its rename leaves the previous checkpoint."""
import glob
import os

import pytest
import torch

from nnunet_cmcl.atomic import save_atomically
from nnunet_cmcl.checkpoints import load_checkpoint_safely


class Killed(BaseException):
    """What a kill looks like to the code that runs: nothing after it."""


@pytest.mark.parametrize("where", ["while writing", "between write and rename"])
def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, where):
    path = str(tmp_path / "checkpoint_latest.pth")
    save_atomically({"network_weights": {"w": torch.ones(3)}, "current_epoch": 1}, path)

    def die(*args, **kwargs):
        if where == "while writing":
            with open(args[1], "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
        raise Killed

    monkeypatch.setattr(torch if where == "while writing" else os, "save" if where == "while writing" else "replace",
                        die)
    with pytest.raises(Killed):
        save_atomically({"network_weights": {"w": torch.zeros(3)}, "current_epoch": 2}, path)
    monkeypatch.undo()
    checkpoint = load_checkpoint_safely(path)
    assert checkpoint["current_epoch"] == 1 and torch.equal(checkpoint["network_weights"]["w"], torch.ones(3))
    assert glob.glob(path + ".*.tmp") == []  # no stray temporary file either

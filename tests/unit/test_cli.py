"""The nnunet-cmcl command: its help lists every subcommand."""
import os

from conftest import run


def test_help_lists_every_subcommand():
    out = run(["nnunet-cmcl", "--help"], dict(os.environ)).stdout
    for command in ("trainer-path", "trainers", "inspect", "verify", "export", "prepare", "pretrain-plans", "train",
                    "splits", "compare", "evaluate-missing", "experiment", "synth", "check-data", "demo"):
        assert command in out

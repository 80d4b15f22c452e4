"""The nnunet-cmcl command: its help lists every subcommand."""
import os

from conftest import run


def test_help_lists_every_subcommand():
    out = run(["nnunet-cmcl", "--help"], dict(os.environ)).stdout
    for command in ("trainer-path", "trainers", "inspect", "verify", "export", "prepare", "pretrain-plans", "train",
                    "splits", "compare", "evaluate-missing", "experiment", "synth", "check-data", "demo"):
        assert command in out


def test_a_partial_report_of_the_gpu_preset_is_refused_in_one_line():
    proc = run(["nnunet-cmcl", "study", "--preset", "gpu", "--report-only"], dict(os.environ), expect=2)
    assert "--report-only is for the built-in presets (cpu, cpu-defaults, tissue), not --preset gpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_ledger_for_the_gpu_preset_is_refused_in_one_line():
    proc = run(["nnunet-cmcl", "study", "--preset", "gpu", "--ledger", "runs"], dict(os.environ), expect=2)
    assert "--ledger is for the built-in presets (cpu, cpu-defaults, tissue), not --preset gpu" in proc.stderr
    assert "Traceback" not in proc.stderr

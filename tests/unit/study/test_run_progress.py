"""Run progress read from training logs written the way nnU-Net's trainer writes them."""
import json
import os
import subprocess
import sys
from datetime import datetime

import pytest

from nnunet_cmcl.evaluation.formatting import format_duration
from nnunet_cmcl.study.run_progress import (RunProgress, describe, read_run_progress, study_seconds_left,
                                            training_log_seconds, watch)

HEADER = ("\n#######################################################################\n"
          "Please cite the following paper when using nnU-Net:\n"
          "#######################################################################\n")


def log_line(*args) -> str:
    """One message as nnUNetTrainer.print_to_log_file writes it: a timestamp, each argument and a space, a newline."""
    text = ""
    for a in (f"{datetime.now()}:", *args):
        text += str(a) + " "
    return text + "\n"


def epoch_lines(epoch: int, seconds: float | None) -> str:
    """What nnU-Net logs for one epoch; without ``seconds`` the epoch has started but not ended."""
    text = log_line("") + log_line(f"Epoch {epoch}") + log_line("Current learning rate: 0.00982")
    if seconds is not None:
        text += (log_line("train_loss", -0.4321) + log_line("val_loss", -0.5) + log_line("Pseudo dice", [0.7, 0.8])
                 + log_line(f"Epoch time: {seconds} s") + log_line("Yayy! New best EMA pseudo Dice: 0.75"))
    return text


def write(folder, name: str, text: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def write_debug_json(folder, num_epochs: int) -> None:
    # nnU-Net stores every attribute as a string
    write(folder, "debug.json", json.dumps({"num_epochs": str(num_epochs), "current_epoch": "0",
                                            "num_iterations_per_epoch": "250"}))


LOG = "training_log_2024_5_7_09_03_01.txt"


def test_run_in_progress(tmp_path):
    write_debug_json(tmp_path, 10)
    write(tmp_path, LOG, log_line(HEADER) + epoch_lines(0, 3.0) + epoch_lines(1, 3.2) + epoch_lines(2, 10.0)
          + epoch_lines(3, None))
    progress = read_run_progress(str(tmp_path))
    # median of 3.0, 3.2, 10.0; epochs 3..9 still to run
    assert progress == RunProgress(epoch=3, num_epochs=10, epoch_seconds=3.2, seconds_left=pytest.approx(7 * 3.2))
    assert describe(progress) == "epoch 3/10, 3.2 s/epoch, about 22 s left"


def test_finished_epoch_is_not_counted_as_left(tmp_path):
    write_debug_json(tmp_path, 4)
    write(tmp_path, LOG, epoch_lines(0, 60.0) + epoch_lines(1, 60.0))
    assert read_run_progress(str(tmp_path)).seconds_left == pytest.approx(2 * 60.0)


def test_half_written_last_line_is_ignored(tmp_path):
    write_debug_json(tmp_path, 20)
    complete = epoch_lines(10, 2.0) + epoch_lines(11, 2.0)
    # "Epoch 12" cut after its first digit would otherwise read as epoch 1
    write(tmp_path, LOG, complete + log_line("") + log_line("Epoch 12")[:-3])
    assert read_run_progress(str(tmp_path)) == RunProgress(11, 20, 2.0, 8 * 2.0)
    # the epoch time line before its closing " \n": epoch 12 has not been seen to end yet
    write(tmp_path, LOG, complete + epoch_lines(12, None) + log_line("Epoch time: 2.0 s")[:-2])
    assert read_run_progress(str(tmp_path)) == RunProgress(12, 20, 2.0, 8 * 2.0)


def test_resumed_run_reads_the_newest_log(tmp_path):
    write_debug_json(tmp_path, 50)
    # month and day are not zero-padded by nnU-Net: compared as text, September would look newer than October
    write(tmp_path, "training_log_2024_9_30_23_59_59.txt", epoch_lines(0, 100.0) + epoch_lines(1, None))
    write(tmp_path, "training_log_2024_10_1_00_10_05.txt", log_line(HEADER) + epoch_lines(25, 5.0) + epoch_lines(26, None))
    progress = read_run_progress(str(tmp_path))
    assert (progress.epoch, progress.epoch_seconds, progress.seconds_left) == (26, 5.0, 24 * 5.0)


def test_without_debug_json(tmp_path):
    write(tmp_path, LOG, epoch_lines(0, 3.0) + epoch_lines(1, None))
    progress = read_run_progress(str(tmp_path))
    assert progress == RunProgress(epoch=1, num_epochs=None, epoch_seconds=3.0, seconds_left=None)
    assert describe(progress) == "epoch 1, 3.0 s/epoch"


def test_half_written_debug_json(tmp_path):
    write(tmp_path, "debug.json", '{"num_epochs": "5", "current_ep')
    write(tmp_path, LOG, epoch_lines(0, None))
    assert read_run_progress(str(tmp_path)) == RunProgress(0, None, None, None)
    assert describe(read_run_progress(str(tmp_path))) == "epoch 0"


def test_before_the_first_epoch(tmp_path):
    assert read_run_progress(str(tmp_path / "fold_0")) is None
    assert read_run_progress(str(tmp_path)) is None
    write_debug_json(tmp_path, 5)
    assert read_run_progress(str(tmp_path)) is None
    write(tmp_path, LOG, log_line(HEADER) + log_line("do_dummy_2d_data_aug: False"))
    assert read_run_progress(str(tmp_path)) == RunProgress(None, 5, None, None)
    assert describe(read_run_progress(str(tmp_path))) == "starting"
    assert describe(None) == "starting"


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (45, "45 s"), (59.4, "59 s"), (60, "1 min"), (89, "1 min"),
                                           (720, "12 min"), (3599, "1 h 00 min"), (7500, "2 h 05 min"),
                                           (90000, "25 h 00 min"), (-3, "0 s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_training_log_seconds_sums_the_span_of_every_log_of_the_run(tmp_path):
    assert training_log_seconds(str(tmp_path / "absent")) is None
    assert training_log_seconds(str(tmp_path)) is None
    (tmp_path / "training_log_2026_1_5_10_00_00.txt").write_text(
        HEADER + "2026-01-05 10:00:00.500000: Epoch 0 \n2026-01-05 10:01:10.500000: Epoch time: 70.0 s \n"
        "2026-01-05 10:02:00.500000: Validation complete \n")
    assert training_log_seconds(str(tmp_path)) == 120.0
    # resumed with --c: a second log; its half-written last line is not counted yet
    (tmp_path / "training_log_2026_1_5_11_00_00.txt").write_text(
        HEADER + "2026-01-05 11:00:00.000000: Epoch 1 \n2026-01-05 11:00:30.000000: Epoch time: 30.0 s \n"
        "2026-01-05 11:05:00.000000: Valida")
    assert training_log_seconds(str(tmp_path)) == 150.0


def test_training_log_seconds_leaves_out_the_pauses_of_the_machine(tmp_path):
    """A run of 10 epochs of 10 s, 5 s of start-up and 60 s of validation, its machine paused once between two
    epochs (1,000 s) and once inside one (500 s): it counts as the 165 s it takes on a machine left alone but for
    its two paused epochs, each at 3 times the median epoch."""
    stamp = datetime(2026, 1, 5, 10, 0, 0).timestamp()
    lines = []

    def at(seconds: float, text: str) -> None:
        lines.append(f"{datetime.fromtimestamp(stamp + seconds)}: {text} \n")

    at(0, "Using device: cpu")
    t = 5.0
    for epoch in range(10):
        t += 1000 if epoch == 3 else 0  # paused between epochs
        at(t, f"Epoch {epoch}")
        seconds = 500.0 if epoch == 6 else 10.0  # paused inside an epoch
        t += seconds
        at(t, f"Epoch time: {seconds} s")
    at(t + 60, "Validation complete")
    (tmp_path / "training_log_2026_1_5_10_00_00.txt").write_text(HEADER + "".join(lines))
    assert training_log_seconds(str(tmp_path)) == pytest.approx(5 + 8 * 10 + 2 * 30 + 60)


def test_study_seconds_left():
    done = {"segmentation": [100.0, 300.0, 200.0]}
    assert study_seconds_left(done, ["segmentation"] * 2, "segmentation", 50.0) == 50.0 + 2 * 200.0
    # the current run has no timed epoch yet: it counts as a whole typical run of its kind
    assert study_seconds_left(done, ["segmentation"] * 2, "segmentation", None) == 3 * 200.0
    assert study_seconds_left({"segmentation": [100.0]}, [], "segmentation", 5.0) == 5.0
    assert study_seconds_left({}, [], "segmentation", 5.0) == 5.0
    assert study_seconds_left({}, ["segmentation"] * 3, "segmentation", None) is None
    assert study_seconds_left({}, [], "segmentation", None) is None
    assert study_seconds_left({}, ["pretraining"] * 3, "segmentation", 5.0) is None  # nothing to go by


def test_study_seconds_left_counts_each_run_at_the_median_of_its_kind():
    done = {"pretraining": [120.0, 140.0], "segmentation": [400.0]}
    assert study_seconds_left(done, ["segmentation", "pretraining", "segmentation"], "pretraining", 30.0) == \
        30.0 + 400.0 + 130.0 + 400.0
    # a kind that has not finished a run yet goes by all finished runs
    assert study_seconds_left({"pretraining": [100.0, 300.0]}, ["segmentation"], "pretraining", 0.0) == 200.0


def test_a_kind_without_finished_runs_goes_by_the_current_run_of_that_kind():
    """A study's first segmentation run, after its pretrainings: the runs to come take as long as it will, not
    as long as a pretraining took."""
    done = {"pretraining": [1800.0, 2400.0]}
    to_start = ["segmentation", "segmentation", "pretraining"]
    assert study_seconds_left(done, to_start, "segmentation", 600.0, 1000.0) == 600.0 + 2 * 1000.0 + 2100.0
    # the current run is of another kind: its projection says nothing of the segmentation runs
    assert study_seconds_left(done, ["segmentation"], "pretraining", 60.0, 1000.0) == 60.0 + 2100.0
    assert study_seconds_left({}, ["segmentation"] * 3, "segmentation", 5.0, 100.0) == 5.0 + 300.0
    assert study_seconds_left({}, ["pretraining"], "segmentation", 5.0, 100.0) is None
    progress = RunProgress(epoch=10, num_epochs=400, epoch_seconds=2.5, seconds_left=975.0)
    assert progress.whole_seconds == 1000.0
    assert RunProgress(epoch=None, num_epochs=400, epoch_seconds=None, seconds_left=None).whole_seconds is None


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args])


@pytest.mark.parametrize("exit_code", [0, 3])
def test_watch_returns_the_exit_code_and_prints_with_prefix(tmp_path, exit_code):
    lines = []
    process = python(f"import sys, time; time.sleep(0.5); sys.exit({exit_code})")
    assert watch(process, str(tmp_path / "fold_0"), "Dataset1 fold 0", interval=0.1, print_fn=lines.append,
                 extra=lambda: " | study: 3 runs left") == exit_code
    # nothing changed while it ran: a single line
    assert lines == ["Dataset1 fold 0: starting | study: 3 runs left"]


def test_watch_prints_when_the_progress_changes(tmp_path):
    write_debug_json(tmp_path, 10)
    later = epoch_lines(0, 4.0) + epoch_lines(1, None)
    writer = ("import sys, time; time.sleep(0.4); open(sys.argv[1], 'w').write(sys.argv[2]); time.sleep(0.5)")
    lines = []
    process = python(writer, str(tmp_path / LOG), later)
    assert watch(process, str(tmp_path), "run", interval=0.1, print_fn=lines.append) == 0
    assert lines == ["run: starting", "run: epoch 1/10, 4.0 s/epoch, about 36 s left"]


def test_watch_prints_to_stdout_by_default(tmp_path, capsys):
    assert watch(python("import time; time.sleep(0.3)"), str(tmp_path), "fold 2", interval=0.1) == 0
    assert capsys.readouterr().out == "fold 2: starting\n"


def test_a_resumed_study_knows_the_durations_of_the_runs_finished_earlier(tmp_path):
    from nnunet_cmcl.study.experiment import finished_durations
    from nnunet_cmcl.study.plan import Run

    def fold(name: str, seconds: float, done: str | None) -> Run:
        folder = tmp_path / name
        (folder / "validation").mkdir(parents=True)
        (folder / "training_log_2026_1_5_10_00_00.txt").write_text(
            HEADER + "2026-01-05 10:00:00.000000: Epoch 0 \n"
            f"2026-01-05 10:00:00.000000: Epoch time: {seconds} s \n"
            f"2026-01-05 10:{int(seconds) // 60:02d}:{int(seconds) % 60:02d}.000000: Validation complete \n")
        if done:
            (folder / done).write_text("{}")
        return Run(name, "T", "0", str(folder), arm=None if done == "checkpoint_final.pth" else "nnU-Net")

    runs = [fold("pre", 90.0, "checkpoint_final.pth"), fold("seg", 150.0, "validation/summary.json"),
            fold("seg_unfinished", 30.0, None)]
    assert finished_durations(runs) == {"pretraining": [90.0], "segmentation": [150.0]}

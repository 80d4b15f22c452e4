"""Progress and time left of a running ``nnUNetv2_train``, read from the files nnU-Net writes into its fold folder.

nnU-Net's trainer appends to ``training_log_<Y>_<M>_<D>_<hh>_<mm>_<ss>.txt`` one line per message, each prefixed
with ``<datetime>: `` and ending in `` \\n``: ``Epoch N`` when an epoch starts (0-based) and ``Epoch time: X s``
when it ends. ``debug.json`` (written when training starts) holds every plain attribute of the trainer as a
string, ``num_epochs`` among them. A run resumed with ``--c`` starts a new log file; the newest one counts.
The files are read while nnU-Net writes them, so nothing here may fail on a half-written line or file.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from nnunet_cmcl.evaluation.formatting import format_duration

LOG_NAME = re.compile(r"^training_log_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)\.txt$")
EPOCH_START = re.compile(r": Epoch (\d+)\s*$")
EPOCH_TIME = re.compile(r": Epoch time: (\d+(?:\.\d+)?) s\s*$")
TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?): ")
PAUSED_EPOCH = 3.0  # an epoch this many times the median epoch ran on a paused or shared machine


@dataclass(frozen=True)
class RunProgress:
    """Where one training run stands; ``epoch`` is None until nnU-Net logged its first epoch."""
    epoch: int | None
    num_epochs: int | None
    epoch_seconds: float | None
    seconds_left: float | None

    @property
    def whole_seconds(self) -> float | None:
        """All the run's epochs at its epoch time: its duration, less start-up and final validation."""
        if self.num_epochs is None or self.epoch_seconds is None:
            return None
        return self.num_epochs * self.epoch_seconds


def newest_training_log(fold_folder: str) -> str | None:
    """The newest training log of the folder, or None if there is none (yet)."""
    try:
        names = os.listdir(fold_folder)
    except OSError:
        return None
    # nnU-Net does not zero-pad month and day, so the names are compared as numbers, not as text
    stamped = [(tuple(int(n) for n in m.groups()), name) for name in names if (m := LOG_NAME.match(name))]
    return os.path.join(fold_folder, max(stamped)[1]) if stamped else None


def complete_lines(path: str) -> list[str]:
    """The lines of ``path`` that end in a newline: a last line without one is still being written."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    return text.split("\n")[:-1]


def training_log_seconds(fold_folder: str) -> float | None:
    """The time a run takes in nnU-Net's trainer on a machine that is neither paused nor shared, from its training
    logs (a run resumed with ``--c`` has one per start): each log's start-up (first line to its first epoch), its
    epochs, each from the end of the one before (checkpoints and plots included), and what follows its last epoch
    (the final validation). An epoch longer than ``PAUSED_EPOCH`` times the run's median counts at that bound: the
    plain span of the logs would count the pauses of the machine (a 40-minute pause in a 15-minute run), and the
    study's time left is estimated from these durations. Process start-up before the first line is not counted;
    an epoch that never ended (the run was stopped) neither. None without a timestamped line."""
    try:
        names = [n for n in os.listdir(fold_folder) if LOG_NAME.match(n)]
    except OSError:
        return None
    outside_epochs, epochs = [], []
    for name in names:
        first = epoch_start = epoch_end = last = None
        for line in complete_lines(os.path.join(fold_folder, name)):
            if not (m := TIMESTAMP.match(line)):
                continue
            last = datetime.fromisoformat(m.group(1))
            first = first or last
            if EPOCH_START.search(line):
                epoch_start = epoch_start or last
            elif EPOCH_TIME.search(line) and epoch_start is not None:
                epochs.append((last - (epoch_end or epoch_start)).total_seconds())
                epoch_end = last
        if first is not None:
            startup = (epoch_start or last) - first
            outside_epochs.append((startup + (last - epoch_end if epoch_end else timedelta(0))).total_seconds())
    if not outside_epochs:
        return None
    bound = PAUSED_EPOCH * statistics.median(epochs) if epochs else 0.0
    return sum(outside_epochs) + sum(min(t, bound) for t in epochs)


def read_num_epochs(fold_folder: str) -> int | None:
    """``num_epochs`` from debug.json, or None if the file is absent, half-written or lacks it."""
    try:
        with open(os.path.join(fold_folder, "debug.json")) as f:
            return int(json.load(f)["num_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def epochs_left(epoch: int, num_epochs: int, epoch_finished: bool) -> int:
    """Epochs still to run, counting the one in progress as a whole one."""
    return max(num_epochs - epoch - (1 if epoch_finished else 0), 0)


def read_run_progress(fold_folder: str) -> RunProgress | None:
    """The progress of the run writing into ``fold_folder``; None while it has no training log."""
    log = newest_training_log(fold_folder)
    if log is None:
        return None
    epoch, epoch_finished, times = None, False, []
    for line in complete_lines(log):
        if m := EPOCH_START.search(line):
            epoch, epoch_finished = int(m.group(1)), False
        elif m := EPOCH_TIME.search(line):
            times.append(float(m.group(1)))
            epoch_finished = True
    num_epochs = read_num_epochs(fold_folder)
    epoch_seconds = statistics.median(times) if times else None
    seconds_left = None
    if epoch is not None and num_epochs is not None and epoch_seconds is not None:
        seconds_left = epochs_left(epoch, num_epochs, epoch_finished) * epoch_seconds
    return RunProgress(epoch, num_epochs, epoch_seconds, seconds_left)


def describe(progress: RunProgress | None) -> str:
    """One line such as ``epoch 12/50, 3.1 s/epoch, about 2 min left``; ``starting`` before the first epoch."""
    if progress is None or progress.epoch is None:
        return "starting"
    text = f"epoch {progress.epoch}" + (f"/{progress.num_epochs}" if progress.num_epochs is not None else "")
    if progress.epoch_seconds is not None:
        text += f", {progress.epoch_seconds:.1f} s/epoch"
    if progress.seconds_left is not None:
        text += f", about {format_duration(progress.seconds_left)} left"
    return text


def study_seconds_left(done: dict[str, list[float]], to_start: list[str], current: str,
                       current_left: float | None, current_whole: float | None = None) -> float | None:
    """The whole study's time left: the current run's time left plus, for each run not started yet, the median
    duration of the finished runs of its kind (``to_start`` lists their kinds, for example pretraining and
    segmentation: a study's pretrainings take a fraction of its segmentation runs, which also validate).

    A kind without finished runs goes by the current run's projected duration (``current_whole``: all its epochs
    at its epoch time) if the current run is of that kind, else by the median of all finished runs. Without a
    time left for the current run (no epoch timed yet) it counts as a whole run of its kind. None when that
    cannot be estimated.
    """
    everything = [seconds for durations in done.values() for seconds in durations]

    def typical(kind: str) -> float | None:
        if done.get(kind):
            return statistics.median(done[kind])
        if kind == current and current_whole is not None:
            return current_whole
        return statistics.median(everything) if everything else None

    parts = [typical(current) if current_left is None else current_left, *(typical(k) for k in to_start)]
    return None if None in parts else sum(parts)


def watch(process: subprocess.Popen, fold_folder: str, prefix: str, interval: float = 60.0,
          print_fn: Callable[[str], object] = print, extra: Callable[[], str] = lambda: "") -> int:
    """Waits for ``process``; every ``interval`` seconds prints ``<prefix>: <progress><extra()>`` when the run's
    progress changed since the last line. Returns the process's exit code."""
    last: object = object()  # differs from any progress, so the first check always prints
    while True:
        try:
            return process.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            pass
        progress = read_run_progress(fold_folder)
        if progress != last:
            print_fn(f"{prefix}: {describe(progress)}{extra()}")
            sys.stdout.flush()
            last = progress

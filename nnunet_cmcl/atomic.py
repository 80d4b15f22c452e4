"""Files and folders that appear whole or not at all: written under a temporary name beside the target, then
renamed."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp)`` and renames tmp to ``path``; on any error or interrupt the partial tmp is removed.

    A kill between write and rename leaves the old ``path`` untouched (os.replace is atomic on one filesystem).
    """
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path) or ".")
    os.close(fd)
    os.remove(tmp)  # only the unique name is wanted: the writer creates the file, with the usual permissions
    try:
        write(tmp)
        if os.path.exists(tmp):  # a writer may decline to write (nnU-Net's save on ranks other than 0)
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_atomically(obj: dict, path: str) -> None:
    """torch.save, atomically: a kill mid-write never leaves a corrupt checkpoint."""
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomically(obj, path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=4)
    write_atomically(path, write)


def write_text_atomically(text: str, path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
    write_atomically(path, write)


@contextmanager
def folder_written_atomically(path: str, replace_existing: bool = True) -> Iterator[str]:
    """Yields a hidden temporary folder beside ``path``; when the block ends without error it becomes ``path``.

    An interrupted block leaves no temporary folder and the old ``path`` untouched, so a reader never sees a
    half-written dataset or evaluation. ``replace_existing=False``: fail instead of replacing an existing ``path``.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the final folder should be a normal one
        yield tmp
        if replace_existing:
            shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)  # atomic on one filesystem; fails rather than merging if path appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

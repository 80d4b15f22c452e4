"""Finds the operations in a training step that make the host wait for a CUDA device.

A host sync stalls the CPU until the GPU has finished everything queued, so the GPU then idles while the
CPU queues the next kernels. The counter runs on any device, CPU included, so tests and benchmarks can
hold a step to its intended syncs without a GPU. It sees values read on the host (``.item()``, ``bool(t)``,
Python control flow on a tensor), device-to-host copies (``.cpu()``, seen only where the tensor is on a
device) and operations whose output size depends on the data (boolean-mask indexing, ``nonzero``,
``masked_select``, ``unique``, ...). Separately it counts tensors built from Python data
(``torch.tensor([...])``): made with ``device=cuda`` each is a blocking copy, a sync too.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS_SYNC = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique",
                "aten.unique", "aten.repeat_interleave.Tensor", "aten.equal")
_SYNC_WITH_BOOL_INDEX = ("aten.index.Tensor", "aten.index_put")
_FROM_PYTHON_DATA = "aten.lift_fresh"


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _copies_to_host(name: str, args, kwargs) -> bool:
    if not name.startswith("aten._to_copy") or not isinstance(args[0], torch.Tensor):
        return False
    target = (kwargs or {}).get("device")
    return args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as c: ...``; then ``c.syncs`` counts sync-causing ops by name and
    ``c.from_python_data`` the tensors built from Python values."""

    def __init__(self):
        super().__init__()
        self.syncs: Counter = Counter()
        self.from_python_data = 0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if self.paused:
            pass
        elif (name.startswith(_ALWAYS_SYNC) or (name.startswith(_SYNC_WITH_BOOL_INDEX) and _has_bool_index(args))
              or _copies_to_host(name, args, kwargs)):
            self.syncs[name] += 1
        elif name.startswith(_FROM_PYTHON_DATA):
            self.from_python_data += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.syncs.values())


def count_train_step(trainer, batch: dict) -> HostSyncCounter:
    """Runs ``trainer.train_step(batch)`` under a HostSyncCounter and returns the counter.

    The optimizer's own step is left out: torch's Adam/AdamW and SGD keep their step counts on the host
    (unless capturable or fused), so reading them costs no sync on CUDA, though on the CPU it looks the same.
    A CUDA grad scaler's check for inf gradients runs before the optimizer's step and is counted.
    """
    optimizer = trainer.optimizer
    own_step = vars(optimizer).get("step")  # an LR scheduler may have wrapped step on the instance
    step = optimizer.step
    counter = HostSyncCounter()

    def uncounted_step(*args, **kwargs):
        counter.paused = True
        try:
            return step(*args, **kwargs)
        finally:
            counter.paused = False

    optimizer.step = uncounted_step
    try:
        with counter:
            trainer.train_step(batch)
    finally:
        if own_step is None:
            del optimizer.step
        else:
            optimizer.step = own_step
    return counter

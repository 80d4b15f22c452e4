"""Reading checkpoints without executing code from them, and the one versioned CMCL record they carry.

A checkpoint written by nnunet-cmcl is an nnU-Net checkpoint (``network_weights`` = the plain nnU-Net network, so
stock ``-pretrained_weights`` loads it) plus ``checkpoint["cmcl"]``::

    {"format": 1, "config": CMCLConfig as dict, "heads": state dict, "modalities": {"channel_names", "groups"},
     "best_retrieval": float, "skipped_steps": int,          # pretraining; skipped_steps: non-finite loss
     "scaler_skipped_steps": int}                            # steps the grad scaler skipped; absent: 0
    {"format": 1, "config": ..., "modalities": ..., "export": {"source", "source_sha256", "report"}}  # export

Checkpoints of nnunet-cmcl 0.1.0 kept these as loose ``cmcl_*`` keys; ``cmcl_record`` reads both layouts. Every
tensor of a pretraining checkpoint, the optimiser's state included, is saved on the CPU (``on_cpu``).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile

import numpy as np
import torch

from nnunet_cmcl.errors import CMCLInputError

# nnU-Net's own checkpoints log numpy scalars; these classes rebuild plain numbers and run no code of the file
_NUMPY_SAFE = [np.dtype, np.float64, np.float32, np.int64, np.bool_, type(np.dtype(np.float64)),
               type(np.dtype(np.float32)), type(np.dtype(np.int64))]
try:
    _NUMPY_SAFE.append(np._core.multiarray.scalar)  # numpy >= 2
except AttributeError:  # pragma: no cover - numpy 1.x
    _NUMPY_SAFE.append(np.core.multiarray.scalar)


def load_checkpoint_safely(path: str) -> dict:
    """torch.load with ``weights_only=True`` (no pickle code runs), on the CPU.

    Raises CMCLInputError naming the file when it is missing, truncated, not a checkpoint, or has no
    ``network_weights``.
    """
    if not os.path.isfile(path):
        raise CMCLInputError(f"checkpoint {path} does not exist; give the path of a checkpoint_*.pth file")
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE), warnings.catch_warnings():
            # a file of another pickle protocol is refused below if it holds more than data; the warning adds nothing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError):
        raise CMCLInputError(f"{path} cannot be read safely as a PyTorch checkpoint (truncated, corrupt, not a "
                             f"checkpoint, or holding objects beyond tensors and plain data); use a complete "
                             f"checkpoint_*.pth written by nnU-Net") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CMCLInputError(f"{path} has no 'network_weights': it is not an nnU-Net checkpoint")
    return checkpoint


def on_cpu(state):
    """``state`` (a state dict, possibly nested in dicts, lists and tuples) with every tensor detached and on the CPU:
    a checkpoint of CPU tensors loads on any machine, GPU or not, even with torch.load's default map_location."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: on_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(v) for v in state)
    return state


def state_dict_on_cpu(module: torch.nn.Module) -> dict:
    return on_cpu(module.state_dict())


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


RECORD_KEY = "cmcl"
RECORD_FORMAT = 1
# the loose keys of the first layout -> their names in the record
_LOOSE_KEYS = {"cmcl_config": "config", "cmcl_heads": "heads", "cmcl_modalities": "modalities",
               "cmcl_best_retrieval": "best_retrieval", "cmcl_skipped_steps": "skipped_steps", "cmcl_export": "export"}


def make_record(**fields) -> dict:
    """The value of ``checkpoint["cmcl"]`` for this version."""
    return {"format": RECORD_FORMAT, **fields}


def cmcl_record(checkpoint: dict) -> dict:
    """The CMCL record of a checkpoint, in this version's layout; {} for a plain nnU-Net checkpoint."""
    if RECORD_KEY in checkpoint:
        record = checkpoint[RECORD_KEY]
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            found = record.get("format") if isinstance(record, dict) else type(record).__name__
            raise CMCLInputError(f"the checkpoint's CMCL record has format {found}, this nnunet-cmcl reads format "
                                 f"{RECORD_FORMAT}; use the nnunet-cmcl version that wrote it")
        return record
    loose = {new: checkpoint[old] for old, new in _LOOSE_KEYS.items() if old in checkpoint}
    return make_record(**loose) if loose else {}


def channel_names_of(checkpoint: dict) -> dict | None:
    """The pretraining dataset's channel_names, from the CMCL record or nnU-Net's init_args."""
    modalities = cmcl_record(checkpoint).get("modalities")
    if modalities is not None:
        return modalities["channel_names"]
    dataset_json = checkpoint.get("init_args", {}).get("dataset_json")
    return dataset_json.get("channel_names") if isinstance(dataset_json, dict) else None

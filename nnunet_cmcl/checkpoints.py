"""Reading checkpoints without executing code from them, and describing where they came from."""
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


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def channel_names_of(checkpoint: dict) -> dict | None:
    """The pretraining dataset's channel_names, from CMCL metadata or nnU-Net's init_args."""
    if "cmcl_modalities" in checkpoint:
        return checkpoint["cmcl_modalities"]["channel_names"]
    dataset_json = checkpoint.get("init_args", {}).get("dataset_json")
    return dataset_json.get("channel_names") if isinstance(dataset_json, dict) else None

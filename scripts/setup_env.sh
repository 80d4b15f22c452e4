#!/usr/bin/env bash
# Creates .venv with nnunet-cmcl and its test tools. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# nnU-Net pulls torchvision (through timm); torch and torchvision must be a matching pair
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (a few minutes on first run)"
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2> >(grep -v "is ignored" >&2)
fi
if ! python -c "import nnunet_cmcl, nnunetv2, nilearn, pytest, xdist" >/dev/null 2>&1; then
  echo "[setup] installing nnunet-cmcl (editable) with nnU-Net and pytest"
  python -m pip install -q -e ".[test]" 2> >(grep -v "is ignored" >&2)
fi
python -c "import torch, nnunetv2, nnunet_cmcl; print(f'[setup] torch {torch.__version__}, nnunet-cmcl {nnunet_cmcl.__version__} ready in .venv')"

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
  python -m pip install -q --no-compile "torch==2.14.1" "torchvision==0.29.1" 2> >(grep -v "is ignored" >&2)
  COMPILE=1
fi
if ! python -c "import nnunet_cmcl, nnunetv2, nilearn, pytest, xdist" >/dev/null 2>&1; then
  echo "[setup] installing nnunet-cmcl (editable) with nnU-Net and pytest"
  python -m pip install -q --no-compile -e ".[test]" 2> >(grep -v "is ignored" >&2)
  COMPILE=1
fi
# pip byte-compiles what it installs on one core; on both cores it takes half as long. Compiled once here, since
# every nnU-Net command of the tests imports torch afresh (and PYTHONDONTWRITEBYTECODE may forbid writing it later).
# A few files in third-party packages are not Python 3.11 (test data), hence `|| true`.
if [ -n "${COMPILE:-}" ]; then
  echo "[setup] byte-compiling the installed packages on every core"
  PYTHONDONTWRITEBYTECODE= python -m compileall -q -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
fi
python -c "import torch, nnunetv2, nnunet_cmcl; print(f'[setup] torch {torch.__version__}, nnunet-cmcl {nnunet_cmcl.__version__} ready in .venv')"

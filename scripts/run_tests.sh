#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
python -m pytest -q -p no:cacheprovider --durations=15 "$@"

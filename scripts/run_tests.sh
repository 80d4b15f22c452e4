#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the whole test suite on the CPU, on 2 pytest-xdist workers
# (CMCL_TEST_WORKERS sets how many).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
# one worker per core (2 here); the modules that share the long nnU-Net runs of tests/conftest.py stay on one worker
python -m pytest -q -p no:cacheprovider --durations=15 -n "${CMCL_TEST_WORKERS:-2}" --dist loadgroup "$@"

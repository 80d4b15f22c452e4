#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the whole test suite on the CPU: tests/unit first (no nnU-Net
# command, about a minute), then tests/nnunet (nnU-Net's real commands on tiny generated data). Arguments go to
# pytest in place of the two folders, e.g. `bash scripts/run_tests.sh tests/unit`. Two pytest workers,
# a test module each at a time (CMCL_TEST_WORKERS=0: one process): nnU-Net's commands leave a core idle part of
# the time (imports, one preprocessing process), which the second worker fills. The modules that share the
# session's trained phantom runs go to one worker together (tests/conftest.py), so those runs are trained once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
if [ $# -eq 0 ]; then set -- tests/unit tests/nnunet; fi
WORKERS=${CMCL_TEST_WORKERS:-2}
python -m pytest -q -p no:cacheprovider --durations=40 -n "$WORKERS" --dist loadgroup "$@"

#!/usr/bin/env bash
# Sets up .venv (scripts/setup_env.sh) and runs the demo on built-in data on the CPU: BraTS-like dataset ->
# plan and preprocess -> CMCL pretraining -> fine-tuning and vanilla baseline on 25% of fold 0's labels -> compare.
# Extra arguments go to `nnunet-cmcl demo` (e.g. --workdir DIR). Running it again skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
nnunet-cmcl demo "$@"

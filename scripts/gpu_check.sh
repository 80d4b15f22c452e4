#!/usr/bin/env bash
# One command for a CUDA machine: installs the package, makes a tiny phantom dataset, runs CMCL pretraining
# through nnUNetv2_train on the GPU (autocast, grad scaler and nnU-Net's default torch.compile), then
# scripts/bench_step.py --device cuda. About 5-8 minutes on one recent GPU; everything goes to a temp folder.
#
#   bash scripts/gpu_check.sh                     # needs python with CUDA torch; pip-installs this package
#   NNUNET_CMCL_SKIP_INSTALL=1 bash scripts/gpu_check.sh   # when nnunetv2 and this package are installed already
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ -z "${NNUNET_CMCL_SKIP_INSTALL:-}" ]]; then
    "$PY" -m pip install -q -e .
fi
"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: gpu_check.sh needs a GPU"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
EOF

WORK=$(mktemp -d -t cmcl_gpu_check.XXXXXX)
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-8} PYTHONUNBUFFERED=1
unset nnUNet_compile  # nnU-Net's default: torch.compile on CUDA

# a short variant, found by nnU-Net through nnUNet_extTrainer like the shipped trainers
mkdir -p "$WORK/ext"
cat > "$WORK/ext/nnUNetTrainerCMCL_gpuCheck.py" <<'EOF'
from nnunet_cmcl.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_gpuCheck(nnUNetTrainerCMCL):
    overrides = {"num_epochs": 3, "num_iterations_per_epoch": 50, "num_val_iterations_per_epoch": 10}
EOF
export nnUNet_extTrainer="$WORK/ext:$(nnunet-cmcl trainer-path)"

start=$(date +%s)
nnunet-cmcl synth phantom --id 990 --cases 12 --shape 96 96 96 --seed 0
nnUNetv2_plan_and_preprocess -d 990 -c 3d_fullres -np 4 -npfp 4 --no_pbar > "$WORK/plan.log"
echo "== CMCL pretraining on cuda (autocast, torch.compile) =="
nnUNetv2_train 990 3d_fullres all -tr nnUNetTrainerCMCL_gpuCheck | grep -E "Epoch time|train_loss|retrieval|compil|WARNING" || true
"$PY" - <<'EOF'
import glob, math, os
from nnunet_cmcl.checkpoints import load_checkpoint_safely
path, = glob.glob(os.path.join(os.environ["nnUNet_results"], "*", "nnUNetTrainerCMCL_gpuCheck__*", "fold_all",
                               "checkpoint_final.pth"))
ckpt = load_checkpoint_safely(path)
assert all(v.isfinite().all() for v in ckpt["network_weights"].values() if v.is_floating_point()), "non-finite weights"
losses = ckpt["logging"]["train_losses"]
print(f"checkpoint OK: epochs {ckpt['current_epoch']}, train loss per epoch {[round(l, 3) for l in losses]}, "
      f"skipped non-finite steps {ckpt.get('cmcl_skipped_steps')}")
EOF
echo "== step benchmark on cuda =="
"$PY" scripts/bench_step.py -d 990 -c 3d_fullres --device cuda --steps 20 --warmup 5
echo "gpu_check finished in $(( $(date +%s) - start )) s; data in $WORK"

#!/usr/bin/env bash
# One command for a CUDA machine: makes a tiny phantom dataset, runs CMCL pretraining through nnUNetv2_train on the
# GPU (autocast, grad scaler and nnU-Net's default torch.compile), checks the checkpoint, then
# scripts/bench_step.py --device cuda. Sized for under 8 minutes on one recent GPU (not yet timed on one); everything
# goes to a temp folder.
#
#   bash scripts/gpu_check.sh                                  # pip-installs this package (needs a registry)
#   CMCL_BUNDLE=.gpu_bundle.tar.xz bash scripts/gpu_check.sh   # offline: what scripts/gpu_bundle.sh packed
#   NNUNET_CMCL_SKIP_INSTALL=1 bash scripts/gpu_check.sh       # nnunetv2 and this package installed already
#
# The same steps on the CPU, small, to check the script itself:
#   CMCL_CHECK_DEVICE=cpu CMCL_CHECK_SHAPE=40 CMCL_CHECK_ITERATIONS=3 CMCL_CHECK_STEPS=2 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${CMCL_CHECK_DEVICE:-cuda}
SHAPE=${CMCL_CHECK_SHAPE:-96}
ITERATIONS=${CMCL_CHECK_ITERATIONS:-50}
STEPS=${CMCL_CHECK_STEPS:-20}
start=$(date +%s)

if [[ -n "${CMCL_BUNDLE:-}" ]]; then
    SITE=$(mktemp -d -t cmcl_site.XXXXXX)
    tar -xJf "$CMCL_BUNDLE" -C "$SITE"
    # the checked-out code over the bundled copy of this package: the check runs what is in the working tree
    rm -rf "$SITE/nnunet_cmcl" && cp -r nnunet_cmcl "$SITE/nnunet_cmcl"  # the checkout's layout, whole
    mkdir -p "$SITE/nnunet_cmcl/trainers" "$SITE/nnunet_cmcl/plans"
    cp trainers/*.py "$SITE/nnunet_cmcl/trainers/"
    cp plans/*.py "$SITE/nnunet_cmcl/plans/"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
elif [[ -z "${NNUNET_CMCL_SKIP_INSTALL:-}" ]]; then
    "$PY" -m pip install -q -e .
fi
CMCL_CHECK_DEVICE=$DEVICE "$PY" - <<'EOF'
import os, torch, nnunetv2, nnunet_cmcl
import importlib.metadata as m
device = os.environ["CMCL_CHECK_DEVICE"]
assert device != "cuda" or torch.cuda.is_available(), "no CUDA device: gpu_check.sh needs a GPU"
name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
print(f"torch {torch.__version__}, nnunetv2 {m.version('nnunetv2')}, nnunet-cmcl from "
      f"{os.path.dirname(nnunet_cmcl.__file__)}, device {name}")
EOF

WORK=$(mktemp -d -t cmcl_gpu_check.XXXXXX)
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-8} PYTHONUNBUFFERED=1
unset nnUNet_compile  # nnU-Net's default: torch.compile on CUDA

# a short variant, found by nnU-Net through nnUNet_extTrainer like the shipped trainers
mkdir -p "$WORK/ext"
cat > "$WORK/ext/nnUNetTrainerCMCL_gpuCheck.py" <<EOF
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL


class nnUNetTrainerCMCL_gpuCheck(nnUNetTrainerCMCL):
    overrides = {"num_epochs": 3, "num_iterations_per_epoch": $ITERATIONS, "num_val_iterations_per_epoch": 10}
EOF
export nnUNet_extTrainer="$WORK/ext:$(nnunet-cmcl trainer-path)"

nnunet-cmcl synth phantom --id 990 --cases 12 --shape "$SHAPE" "$SHAPE" "$SHAPE" --seed 0
nnUNetv2_plan_and_preprocess -d 990 -c 3d_fullres -np 4 -npfp 4 --no_pbar > "$WORK/plan.log"
echo "== CMCL pretraining on $DEVICE (autocast and torch.compile on CUDA) =="
nnUNetv2_train 990 3d_fullres all -tr nnUNetTrainerCMCL_gpuCheck -device "$DEVICE" \
    | grep -E "Epoch time|train_loss|retrieval|grad scaler|compil|WARNING" || true
"$PY" - <<'EOF'
import glob, os
from nnunet_cmcl.checkpoints import cmcl_record, load_checkpoint_safely
path, = glob.glob(os.path.join(os.environ["nnUNet_results"], "*", "nnUNetTrainerCMCL_gpuCheck__*", "fold_all",
                               "checkpoint_final.pth"))
ckpt = load_checkpoint_safely(path)
assert all(v.isfinite().all() for v in ckpt["network_weights"].values() if v.is_floating_point()), "non-finite weights"
losses, record = ckpt["logging"]["train_losses"], cmcl_record(ckpt)
print(f"checkpoint OK: epochs {ckpt['current_epoch']}, train loss per epoch {[round(l, 3) for l in losses]}, "
      f"skipped non-finite steps {record['skipped_steps']}, grad scaler skipped steps "
      f"{record.get('scaler_skipped_steps')}")
assert all(v.device.type == "cpu" for v in ckpt["optimizer_state"]["state"][0].values()), "optimizer state on GPU"
EOF
echo "== step benchmark on $DEVICE =="
"$PY" scripts/bench_step.py -d 990 -c 3d_fullres --device "$DEVICE" --steps "$STEPS" --warmup 5
echo "gpu_check finished in $(( $(date +%s) - start )) s; data in $WORK"

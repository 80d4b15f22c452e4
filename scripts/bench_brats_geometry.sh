#!/usr/bin/env bash
# The CMCL step against the vanilla step at the BraTS 3d_fullres geometry, on the CPU: a generated 4-channel
# phantom of BraTS's shape, preprocessed by nnU-Net, trained with nnU-Net's plans of a BraTS-like fingerprint
# (patch 128^3, batch 2, its architecture; nnunet_cmcl.plans.fingerprints). Usage: bash scripts/bench_brats_geometry.sh
# [WORKDIR] [STEPS]; about 15 minutes on 2 cores with 3 steps. docs/performance.md has its result.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
WORKDIR=$(realpath -m "${1:-bench_brats_geometry}")
STEPS=${2:-3}
export nnUNet_raw=$WORKDIR/raw nnUNet_preprocessed=$WORKDIR/preprocessed nnUNet_results=$WORKDIR/results
export nnUNet_n_proc_DA=0 nnUNet_compile=false
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
[ -d "$nnUNet_raw/Dataset531_BratsGeometry" ] || python -c "
from nnunet_cmcl.data.synthetic import write_phantom_dataset
write_phantom_dataset('$nnUNet_raw', 531, name='BratsGeometry', num_cases=4,
                      modalities=('FLAIR', 'T1w', 't1gd', 'T2w'), shape=(138, 170, 138), seed=0)"
# nnU-Net's planner sets torch's thread count from nnUNet_n_proc_DA and fails on 0
[ -f "$nnUNet_preprocessed/Dataset531_BratsGeometry/nnUNetPlans.json" ] || \
  nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d 531 -c 3d_fullres -np 1 -npfp 1 --no_pbar > /dev/null
python - <<'PY'
import json
import os

from nnunet_cmcl.plans.fingerprints import standard_plans

folder = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset531_BratsGeometry")
own = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
brats = standard_plans()[0]["nnUNetPlans"]["configurations"]["3d_fullres"]
brats["data_identifier"] = own["configurations"]["3d_fullres"]["data_identifier"]  # the phantom's data
own.update(plans_name="nnUNetPlans_bratsGeometry", configurations={"3d_fullres": brats})
json.dump(own, open(os.path.join(folder, "nnUNetPlans_bratsGeometry.json"), "w"), indent=1)
PY
python scripts/bench_step.py -d 531 -c 3d_fullres -p nnUNetPlans_bratsGeometry --device cpu --steps "$STEPS" --warmup 1 \
    --no-dense-curve

"""nnunet-cmcl synth writes a dataset that nnU-Net's integrity check and fingerprinting accept."""
import json
import os

from conftest import run


SHAPE = (24, 24, 24)


def test_synth_cli_writes_a_dataset_that_nnunets_integrity_check_accepts(tmp_path):
    """nnU-Net's own integrity check and fingerprinting accept the dataset `nnunet-cmcl synth` writes (planning
    and preprocessing of the same writer's output run in every test that uses conftest's phantom_env)."""
    raw, pre, res = (str(tmp_path / n) for n in ("raw", "preprocessed", "results"))
    env = {**os.environ, "nnUNet_raw": raw, "nnUNet_preprocessed": pre, "nnUNet_results": res,
           "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"}
    synth = ["nnunet-cmcl", "synth", "phantom", "--id", "42", "--cases", "4", "--shape", *map(str, SHAPE), "--seed", "1"]
    run(synth, env)  # into $nnUNet_raw
    # the same id again: one line naming the fix, exit 2, the first dataset untouched
    again = run(synth, env, expect=2)
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    # -np 1: the default spawns 8 workers, each re-importing torch (~20 s extra on 2 cores)
    run(["nnUNetv2_extract_fingerprint", "-d", "42", "--verify_dataset_integrity", "-np", "1", "--no_pbar"], env,
        timeout=300)
    with open(os.path.join(pre, "Dataset042_CMCLPhantom", "dataset_fingerprint.json")) as f:
        shapes = json.load(f)["shapes_after_crop"]
    assert len(shapes) == 4 and all(tuple(s) == tuple(SHAPE) for s in shapes)  # the phantom fills its volume

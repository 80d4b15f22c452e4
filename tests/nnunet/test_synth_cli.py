"""nnunet-cmcl synth writes a dataset that nnU-Net's integrity check and fingerprinting accept: the BraTS-like one,
with its region labels (the phantom and brain writers' output is planned and preprocessed by the fixtures)."""
import json
import os

from conftest import run


SHAPE = (32, 32, 32)


def test_synth_cli_writes_a_dataset_that_nnunets_integrity_check_accepts(tmp_path):
    """nnU-Net's own integrity check (labels against dataset.json's regions, geometry of every channel) and its
    fingerprinting accept the BraTS-like dataset `nnunet-cmcl synth brats` writes."""
    raw, pre, res = (str(tmp_path / n) for n in ("raw", "preprocessed", "results"))
    env = {**os.environ, "nnUNet_raw": raw, "nnUNet_preprocessed": pre, "nnUNet_results": res,
           "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"}
    synth = ["nnunet-cmcl", "synth", "brats", "--id", "42", "--cases", "3", "--shape", *map(str, SHAPE), "--seed", "1"]
    run(synth, env)  # into $nnUNet_raw
    # the same id again: one line naming the fix, exit 2, the first dataset untouched
    again = run(synth, env, expect=2)
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    # -np 1: the default spawns 8 workers, each re-importing torch (~20 s extra on 2 cores)
    run(["nnUNetv2_extract_fingerprint", "-d", "42", "--verify_dataset_integrity", "-np", "1", "--no_pbar"], env,
        timeout=300)
    with open(os.path.join(pre, "Dataset042_CMCLBraTS", "dataset_fingerprint.json")) as f:
        fingerprint = json.load(f)
    # cropped to the head, 4 channels with their intensity statistics
    assert len(fingerprint["shapes_after_crop"]) == 3
    assert all(all(8 < n <= m for n, m in zip(s, SHAPE)) for s in fingerprint["shapes_after_crop"])
    assert sorted(fingerprint["foreground_intensity_properties_per_channel"]) == ["0", "1", "2", "3"]

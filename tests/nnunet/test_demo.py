"""The demo, shortened (every budget scaled down alike), end to end on the built-in phantom (the brain's 3
modalities at 48x56x48 cost twice as much for the same plumbing), then rerun."""
import os

from conftest import nnunet_env, run


def test_demo_runs_end_to_end_and_skips_finished_steps(tmp_path):
    env = {**nnunet_env(str(tmp_path / "unused")), "nnUNet_CMCL_demo_scale": "0.1"}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.pop(key)  # the demo sets up its own folders under --workdir
    workdir = str(tmp_path / "demo")
    first = run(["nnunet-cmcl", "demo", "--workdir", workdir, "--kind", "phantom", "--cases", "6"], env).stdout
    assert "nnUNetv2_plan_and_preprocess" in first and "| mean" in first
    report = os.path.join(workdir, "nnUNet_results", "Dataset950_CMCLPhantom", "cmcl_comparisons",
                          "nnUNetTrainerCMCLFinetune_demo_vs_nnUNetTrainerSeeded_demo__nnUNetPlans__3d_fullres")
    assert os.path.isfile(os.path.join(report, "comparison.md")) and os.path.isfile(os.path.join(report, "comparison.png"))
    second = run(["nnunet-cmcl", "demo", "--workdir", workdir, "--kind", "phantom", "--cases", "6"], env).stdout
    assert second.count("finished earlier, skipped") == 3 and "exists, kept" in second

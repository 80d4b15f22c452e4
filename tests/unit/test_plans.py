"""Pretraining plans: only pretraining trainers are found, and on nnU-Net's standard plans of a BraTS-like dataset
every shipped pretrainer's step stays within the vanilla step's memory by nnU-Net's estimate."""
import os

import pytest

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.plans.pretraining import find_pretraining_trainer
from nnunet_cmcl.pretraining.dae import nnUNetTrainerCMCL_DAE


def test_only_pretraining_trainers_are_found():
    assert find_pretraining_trainer("nnUNetTrainerCMCL_DAE") is nnUNetTrainerCMCL_DAE
    for name in ("nnUNetTrainer", "nnUNetTrainerCMCLFinetune", "nnUNetTrainerNoSuchThing"):
        with pytest.raises(CMCLInputError, match="not a pretraining trainer"):
            find_pretraining_trainer(name)


# the pretrainers shipped for studies: CMCL, with the global term, reconstruction only and the two hybrids
SHIPPED = ("nnUNetTrainerCMCL", "nnUNetTrainerCMCL_global", "nnUNetTrainerCMCL_recon", "nnUNetTrainerCMCL_DAE",
           "nnUNetTrainerCMCL_DAE_global")


@pytest.fixture(scope="module")
def brats_plans():
    """nnU-Net's default, ResEnc M and ResEnc L plans of a BraTS-like fingerprint (a few seconds)."""
    from nnunet_cmcl.plans.fingerprints import BRATS_LIKE, standard_plans

    return standard_plans(BRATS_LIKE)


def test_the_fingerprint_gives_nnUNets_standard_brats_plans(brats_plans):
    plans, _ = brats_plans
    shapes = {(name, c): (tuple(p["configurations"][c]["patch_size"]), p["configurations"][c]["batch_size"])
              for name, p in plans.items() for c in ("2d", "3d_fullres")}
    assert shapes[("nnUNetPlans", "3d_fullres")] == ((128, 128, 128), 2)
    assert shapes[("nnUNetPlans", "2d")] == ((192, 160), 105)
    assert shapes[("nnUNetResEncUNetMPlans", "3d_fullres")] == ((128, 128, 128), 2)
    assert shapes[("nnUNetResEncUNetLPlans", "3d_fullres")] == ((160, 192, 160), 3)


def test_every_shipped_pretrainer_fits_the_vanilla_step_on_every_standard_plan(brats_plans):
    from nnunet_cmcl.plans.pretraining import derive_pretraining_plans, size_pretraining_batch

    plans, dataset_json = brats_plans
    for p in plans.values():
        for configuration in ("2d", "3d_fullres"):
            for name in SHIPPED:
                trainer = find_pretraining_trainer(name)
                where = (p["plans_name"], configuration, name)
                sized = size_pretraining_batch(p, configuration, dataset_json, trainer, num_gpus=2)
                assert sized.memory_ratio <= 1.0 and sized.batch % 2 == 0, where
                derived, report = derive_pretraining_plans(p, configuration, dataset_json, trainer, num_gpus=2)
                assert derived["configurations"][configuration]["batch_size"] == sized.batch and "2 GPUs" in report
                assert sized.batch <= 4 * sized.target, where  # the cap of the growth
                assert size_pretraining_batch(p, configuration, dataset_json, trainer).memory_ratio <= 1.0, where


def test_the_batch_grows_where_the_step_frees_memory_and_shrinks_where_it_needs_more(brats_plans):
    from nnunet_cmcl.plans.pretraining import size_pretraining_batch

    plans, dataset_json = brats_plans
    default = plans["nnUNetPlans"]
    cmcl = size_pretraining_batch(default, "3d_fullres", dataset_json, find_pretraining_trainer("nnUNetTrainerCMCL"))
    dae = size_pretraining_batch(default, "3d_fullres", dataset_json, nnUNetTrainerCMCL_DAE)
    assert cmcl.per_sample < 1 and cmcl.batch > cmcl.target  # encoder only, on sub-crops
    assert dae.per_sample > 1 and dae.batch < dae.target  # the decoder on every view too


def test_the_dense_logits_count_in_the_batch_and_stay_bounded_on_2d(brats_plans):
    # a 2d batch of a hundred samples: unbounded, every dense anchor would be scored against the whole batch's
    # locations and the logits alone would outgrow the vanilla step
    from dataclasses import replace

    from nnunet_cmcl.plans.pretraining import dense_logits_per_sample, size_pretraining_batch

    plans, dataset_json = brats_plans
    cmcl = find_pretraining_trainer("nnUNetTrainerCMCL")
    sized = size_pretraining_batch(plans["nnUNetPlans"], "2d", dataset_json, cmcl)
    strides = plans["nnUNetPlans"]["configurations"]["2d"]["architecture"]["arch_kwargs"]["strides"]
    config = cmcl.cmcl_config
    bounded = dense_logits_per_sample(sized.sampler, strides, config, sized.batch)
    unbounded = dense_logits_per_sample(sized.sampler, strides, replace(config, dense_max_candidates=0), sized.batch)
    locations = 12 + 48 + 64  # bottleneck, then the two stages above it (docs/standard_plans.md)
    v = sized.sampler.num_views
    assert bounded <= v * locations * config.dense_max_candidates < unbounded / 4
    # the step with its logits still fits, with fewer samples than the feature maps alone would allow
    maps_only = size_pretraining_batch(plans["nnUNetPlans"], "2d", dataset_json,
                                       type("NoDense", (cmcl,), {"cmcl_config": replace(config, weight_dense=0.0,
                                                                                        weight_global=1.0,
                                                                                        dense_stages=0)}))
    assert sized.memory_ratio <= 1.0 and sized.batch < maps_only.batch


def test_a_batch_that_cannot_be_split_over_the_gpus_is_refused_in_one_line(brats_plans):
    from nnunet_cmcl.plans.pretraining import derive_pretraining_plans

    plans, dataset_json = brats_plans
    default = plans["nnUNetPlans"]
    # at most 4 x the plans' batch of 2: 8 samples cannot be split over 16 GPUs
    refusal = r"-num_gpus 16: .* fewer samples than GPUs; give -num_gpus 8 or less"
    with pytest.raises(CMCLInputError, match=refusal) as e:
        derive_pretraining_plans(default, "3d_fullres", dataset_json, nnUNetTrainerCMCL_DAE, num_gpus=16)
    assert "\n" not in str(e.value)
    with pytest.raises(CMCLInputError, match="-num_gpus 0: .* 1 or more"):
        derive_pretraining_plans(default, "3d_fullres", dataset_json, nnUNetTrainerCMCL_DAE, num_gpus=0)


def test_fingerprint_planning_works_with_batches_drawn_in_the_main_process(monkeypatch):
    # nnU-Net's planner sets torch's thread count from nnUNet_n_proc_DA, and 0 (the tests' and benchmarks'
    # setting for in-process augmentation) made it fail
    from nnunet_cmcl.plans.fingerprints import BRATS_LIKE, standard_plans

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    plans, _ = standard_plans(BRATS_LIKE, planners=("ExperimentPlanner",))
    assert tuple(plans["nnUNetPlans"]["configurations"]["3d_fullres"]["patch_size"]) == (128, 128, 128)
    assert os.environ["nnUNet_n_proc_DA"] == "0"  # restored afterwards

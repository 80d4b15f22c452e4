"""nnUNetTrainerCMCL on real nnU-Net plans and data: default and ResEnc plans, 2d and 3d_fullres."""
import copy
import math
from dataclasses import replace

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from conftest import plan_and_preprocess
from nnunet_cmcl.checkpoints import channel_names_of, cmcl_record, load_checkpoint_safely
from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.host_syncs import count_train_step
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.pretraining.dae import CMCLReconstructionLoss, nnUNetTrainerCMCL_DAE
from nnunet_cmcl.pretraining.metrics import normalised_std
from nnunet_cmcl.pretraining import trainer as trainer_module
from nnunet_cmcl.pretraining.model import stage_key
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL
from nnunet_cmcl.pretraining.variants import nnUNetTrainerCMCL_Aug, nnUNetTrainerCMCL_bottleneck, nnUNetTrainerCMCL_global
from nnunet_cmcl.transfer.finetune import nnUNetTrainerCMCLFinetune
from nnunet_cmcl.transfer.handoff import describe


DATASET = "Dataset501_CMCLPhantom"


@pytest.fixture(scope="module")
def env(resenc_env):
    plan_and_preprocess(501, resenc_env, ("2d",))
    return resenc_env


def make_trainer(env, monkeypatch, configuration, plans="nnUNetPlans", cls=nnUNetTrainerCMCL,
                 dataset_json=None, configurations=None):
    """A CMCL trainer on dataset 501, the default one unless ``cls`` says otherwise (tests of the global term
    give nnUNetTrainerCMCL_global: its head, momentum encoder and key queue beside the dense terms);
    ``configurations`` are added to the plans' configurations."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # in-process data augmentation
    folder = join(env["nnUNet_preprocessed"], DATASET)
    plans_dict = load_json(join(folder, f"{plans}.json"))
    plans_dict["continue_training"] = False
    plans_dict["configurations"].update(configurations or {})
    dataset_json = dataset_json or load_json(join(folder, "dataset.json"))
    return cls(plans_dict, configuration, 0, dataset_json, torch.device("cpu"))


def stock_network(trainer):
    """The network stock nnUNetTrainer builds from the same plans."""
    return nnUNetTrainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, trainer.num_input_channels,
        trainer.label_manager.num_segmentation_heads, True)


def clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("configuration,plans", [("3d_fullres", "nnUNetPlans"), ("2d", "nnUNetPlans"),
                                                 ("3d_fullres", "nnUNetResEncUNetMPlans")])
def test_step_trains_heads_and_encoder_and_checkpoint_fits_stock_network(env, monkeypatch, tmp_path,
                                                                          configuration, plans):
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, configuration, plans, cls=nnUNetTrainerCMCL_global)
    trainer.on_train_start()
    heads, encoder = clone_state(trainer.cmcl_model.heads), clone_state(trainer.cmcl_model.encoder)
    decoder_keys = [k for k in trainer.plain_network.state_dict() if k.startswith("decoder.stages")]
    decoder = clone_state(trainer.plain_network)

    batch = next(trainer.dataloader_train)
    while len(set(batch["keys"])) < 2:  # two patches of one case are no negatives: the global term would be 0
        batch = next(trainer.dataloader_train)
    losses = trainer.train_step(batch)
    stages = {f"loss_{stage_key(k)}" for k in range(1, trainer.cmcl_config.dense_stages + 1)}  # 2 by default
    assert torch.isfinite(losses["loss"]) and set(losses) == {"loss", "loss_global", "loss_dense"} | stages
    assert all(not torch.equal(v, trainer.cmcl_model.heads.state_dict()[k]) for k, v in heads.items()
               if v.is_floating_point())
    assert any(not torch.equal(v, trainer.cmcl_model.encoder.state_dict()[k]) for k, v in encoder.items())
    # the decoder takes no part in pretraining
    assert all(torch.equal(decoder[k], trainer.plain_network.state_dict()[k]) for k in decoder_keys)

    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    stock = stock_network(trainer)
    assert {k: v.shape for k, v in checkpoint["network_weights"].items()} == \
           {k: v.shape for k, v in stock.state_dict().items()}
    assert set(cmcl_record(checkpoint)["heads"]) == set(trainer.cmcl_model.heads.state_dict())
    assert cmcl_record(checkpoint)["config"] == trainer.cmcl_config.to_dict()
    load_pretrained_weights(stock, path)  # nnU-Net's own loader, as -pretrained_weights uses it
    for key, value in stock.encoder.state_dict().items():
        assert torch.equal(value, checkpoint["network_weights"][f"encoder.{key}"])

    # resume: a new trainer takes weights, heads and epoch back
    resumed = make_trainer(env, monkeypatch, configuration, plans, cls=nnUNetTrainerCMCL_global)
    resumed.load_checkpoint(path)
    assert all(torch.equal(v, resumed.cmcl_model.heads.state_dict()[k])
               for k, v in trainer.cmcl_model.heads.state_dict().items())
    assert resumed.current_epoch == trainer.current_epoch + 1
    # the key queue and the momentum encoder resume exactly (their keys were pushed after the step)
    assert int(trainer.key_queue.filled.sum()) == trainer.batch_size * trainer.cmcl_model.sampler.num_views
    for mine, theirs in ((resumed.key_queue, trainer.key_queue), (resumed.momentum_encoder, trainer.momentum_encoder)):
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())

    with torch.no_grad():
        trainer.on_validation_epoch_start()
        result = trainer.validation_step(next(trainer.dataloader_val))
    assert result["global"].shape[:2] == (trainer.cmcl_model.sampler.num_views, trainer.batch_size)
    # the dense metrics come at the epoch's end, over every rank's batch of each step
    assert result["dense"].shape[:2] == result["global"].shape[:2]
    assert result["inside"].shape == result["dense"].shape[1:3]
    trainer.on_validation_epoch_end([result])
    assert 0.0 <= trainer.logger.get_value("val_dense_retrieval_top1", step=-1) <= 1.0


def test_default_trains_the_dense_terms_only(env, monkeypatch):
    # the global term is off by default (docs/study.md): no global head, no momentum encoder, no key queue
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=nnUNetTrainerCMCL)
    trainer.on_train_start()
    assert "global" not in trainer.cmcl_model.heads and trainer.momentum_encoder is trainer.key_queue is None
    losses = trainer.train_step(next(trainer.dataloader_train))
    assert set(losses) == {"loss", "loss_dense"} | {f"loss_{stage_key(k)}" for k in (1, 2)}
    assert torch.isfinite(losses["loss"])


def test_default_has_a_view_with_every_channel(env, monkeypatch):
    trainer = make_trainer(env, monkeypatch, "3d_fullres")
    trainer.on_train_start()
    assert trainer.cmcl_model.sampler.num_views == 3
    assert torch.isfinite(trainer.train_step(next(trainer.dataloader_train))["loss"])


def test_inside_comes_from_nnunets_outside_marker_not_from_the_intensities(env, monkeypatch):
    # nnU-Net's noise, contrast and gamma transforms also change the zero padding: forced on, data != 0 holds
    # outside the image, while the segmentation's -1 marker, which the CMCL trainer keeps, still tells
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from nnunet_cmcl.pretraining.outside import MarkOutside, inside_image
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, "3d_fullres")
    trainer.on_train_start()
    loader = trainer.dataloader_train.data_loader
    kinds = {type(t).__name__ for t in loader.transforms.transforms}
    assert "MarkOutside" in kinds and not kinds & {"RemoveLabelTransform", "ConvertSegmentationToRegionsTransform"}
    batch = next(trainer.dataloader_train)
    assert set(torch.unique(batch["target"]).tolist()) <= {-1, 0}  # the marker, and no label
    # the patches as loaded, each with a slab padded as nnU-Net's loader pads (data 0, segmentation -1)
    transforms, loader.transforms = loader.transforms, None
    raw = loader.generate_train_batch()
    loader.transforms = transforms
    raw["data"][..., :8] = 0
    raw["target"][..., :8] = -1
    truth = raw["target"][:, :1] != -1
    intensity = [t for t in transforms.transforms if isinstance(t, RandomTransform) and
                 any(k in type(t.transform).__name__ for k in ("Noise", "Contrast", "Gamma"))]
    assert len(intensity) >= 4
    for t in intensity:
        t.apply_probability = 1.0
    # nnU-Net's own intensity transforms and the trainer's marker, without the spatial ones: the truth stays in place
    forced = ComposeTransforms(intensity + [t for t in transforms.transforms if isinstance(t, MarkOutside)])
    samples = [forced(image=d.clone(), segmentation=t.clone()) for d, t in zip(raw["data"], raw["target"])]
    data = torch.stack([x["image"] for x in samples])
    target = torch.stack([x["segmentation"] for x in samples])
    assert torch.equal(inside_image(target), truth)
    nonzero = (data != 0).any(dim=1, keepdim=True)
    assert (nonzero & ~truth).sum() > 0.5 * (~truth).sum()  # what data != 0 would have called image
    # the loader's patches are larger (room for the spatial transform): the model takes the plans' patch of them
    corner = [(n - p) // 2 for n, p in zip(data.shape[2:], trainer.configuration_manager.patch_size)]
    window = (slice(None), slice(None)) + tuple(slice(c, c + p) for c, p in
                                                zip(corner, trainer.configuration_manager.patch_size))
    out, _ = trainer._forward_loss({"data": data[window], "target": target[window], "keys": raw["keys"]})
    assert out["inside"].shape == out["dense"].shape[1:3] and out["inside_stage2"].dtype == torch.bool


@pytest.mark.parametrize("cls", [nnUNetTrainerCMCL, nnUNetTrainerCMCL_global, nnUNetTrainerCMCL_DAE,
                                 nnUNetTrainerCMCL_Aug, nnUNetTrainerCMCL_bottleneck])  # the default: dense_stages 2
def test_step_waits_for_the_device_once(env, monkeypatch, cls):
    # the one sync is the finite check that decides whether to update; nnU-Net's own step also syncs once
    # (its loss to numpy). Boolean-mask indexing or constants built from lists per step would add more
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=cls)
    trainer.on_train_start()
    counter = count_train_step(trainer, next(trainer.dataloader_train))
    assert dict(counter.syncs) == {"aten._local_scalar_dense.default": 1}
    assert counter.from_python_data == 1  # the batch's case ids, copied to the device without blocking


@pytest.mark.parametrize("cls", [nnUNetTrainerCMCL, nnUNetTrainerCMCL_DAE, nnUNetTrainerCMCL_Aug])
def test_model_compiles_as_one_graph_and_matches_eager(env, monkeypatch, cls):
    # nnU-Net compiles the trained module on CUDA by default; a graph break (fullgraph=True raises on one) would
    # split the step, and a data-dependent shape would recompile. aot_eager traces as inductor does, with no
    # C++ compiler needed
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=cls)
    trainer.on_train_start()
    data = next(trainer.dataloader_train)["data"]
    compiled = torch.compile(trainer.cmcl_model, fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    eager_out = trainer.cmcl_model(data)
    torch.manual_seed(0)
    compiled_out = compiled(data)
    assert set(compiled_out) == set(eager_out)
    for key, value in eager_out.items():
        if value.is_floating_point() and key != "crops":
            assert torch.allclose(compiled_out[key], value, atol=1e-4), key
        else:  # the same random crops and locations
            assert torch.equal(compiled_out[key], value), key
    sum(v.sum() for k, v in compiled_out.items() if v.requires_grad).backward()
    assert all(p.grad is not None for p in trainer.cmcl_model.encoder.parameters())


def test_one_channel_dataset_is_refused_before_training(env, monkeypatch):
    dataset_json = load_json(join(env["nnUNet_preprocessed"], DATASET, "dataset.json"))
    dataset_json["channel_names"] = {"0": "CT"}
    with pytest.raises(CMCLInputError, match="at least 2 modalities.*nnUNetTrainerCMCL_Aug"):
        make_trainer(env, monkeypatch, "3d_fullres", dataset_json=dataset_json)


def test_network_without_skip_encoder_is_refused(env, monkeypatch):
    trainer = make_trainer(env, monkeypatch, "3d_fullres")
    trainer.configuration_manager.configuration["architecture"] = copy.deepcopy(
        trainer.configuration_manager.configuration["architecture"])
    # a class that nnU-Net can build from the plans but that has no U-Net encoder
    trainer.configuration_manager.configuration["architecture"]["network_class_name"] = "torch.nn.Identity"
    with pytest.raises(CMCLInputError, match="Identity has no encoder that returns skips"):
        trainer.initialize()


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(env, monkeypatch):
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=nnUNetTrainerCMCL_global)  # the centre too
    trainer.max_consecutive_nonfinite_steps = 2
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    good = next(trainer.dataloader_train)
    bad = {**good, "data": good["data"].clone()}
    # one voxel inside every view's crop (a corner could be cut off), in every channel (views zero some channels);
    # the instance norms spread it over the whole sample
    centre = [s // 2 for s in good["data"].shape[2:]]
    bad["data"][(0, slice(None), *centre)] = float("nan")
    before = clone_state(trainer.network)
    assert trainer.train_step(bad) == {}  # takes no part in the epoch's means
    # no update, and the global head's running centre is not poisoned by the batch's NaN mean
    assert all(torch.equal(v, trainer.network.state_dict()[k]) for k, v in before.items())
    assert trainer.skipped_steps_total == 1 and trainer.consecutive_nonfinite_steps == 1
    assert torch.isfinite(trainer.train_step(good)["loss"])  # a good step updates and resets the run of bad ones
    assert trainer.consecutive_nonfinite_steps == 0
    assert any(not torch.equal(v, trainer.network.state_dict()[k]) for k, v in before.items())
    bad["data"][(1, slice(None), *centre)] = float("inf")
    trainer.train_step(bad)
    with pytest.raises(RuntimeError, match="2 consecutive steps had non-finite loss or gradients.*check-data"):
        trainer.train_step(bad)
    assert trainer.skipped_steps_total == 3
    trainer.on_train_epoch_end([{}, {"loss": torch.tensor(1.0), "loss_global": torch.tensor(0.5),
                                     "loss_dense": torch.tensor(0.5)}, {}])
    assert trainer.logger.get_value("train_losses", step=-1) == 1.0


class _TypoTrainer(nnUNetTrainerCMCL):
    overrides = {"num_epoch": 3}  # num_epochs misspelt: must not silently train nnU-Net's 1000 epochs


class _TypoFinetune(nnUNetTrainerCMCLFinetune):
    overrides = {"warmup_fractoin": 0.1}


class _ShortTrainer(nnUNetTrainerCMCL):
    overrides = {"num_epochs": 3, "num_iterations_per_epoch": 7}


def test_overrides_must_name_existing_attributes(env, monkeypatch):
    with pytest.raises(CMCLInputError, match="'num_epoch'.*did you mean 'num_epochs'"):
        make_trainer(env, monkeypatch, "3d_fullres", cls=_TypoTrainer)
    with pytest.raises(CMCLInputError, match="'warmup_fractoin'.*did you mean 'warmup_fraction'"):
        make_trainer(env, monkeypatch, "3d_fullres", cls=_TypoFinetune)
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=_ShortTrainer)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (3, 7)


def test_loss_is_built_where_nnunet_builds_losses(env, monkeypatch):
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=nnUNetTrainerCMCL_DAE)
    trainer.initialize()
    assert isinstance(trainer.loss, CMCLReconstructionLoss)  # no Dice+CE is built for pretraining
    assert trainer.loss.weight_reconstruction == trainer.cmcl_config.weight_reconstruction > 0


class _NoQueue(nnUNetTrainerCMCL_global):
    # the first layout had the global head and predates the queue
    cmcl_config = replace(nnUNetTrainerCMCL_global.cmcl_config, queue_size=0)


def test_checkpoint_of_the_first_layout_still_loads(env, monkeypatch, tmp_path):
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, "3d_fullres", cls=_NoQueue)
    trainer.on_train_start()
    trainer.train_step(next(trainer.dataloader_train))
    trainer.best_retrieval, trainer.skipped_steps_total = 0.625, 4
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    record = checkpoint.pop("cmcl")
    assert record["format"] == 1
    # nnunet-cmcl 0.1.0 stored the record's fields as loose keys
    old = {**checkpoint, "cmcl_config": record["config"], "cmcl_heads": record["heads"],
           "cmcl_modalities": record["modalities"], "cmcl_best_retrieval": record["best_retrieval"],
           "cmcl_skipped_steps": record["skipped_steps"]}
    old_path = str(tmp_path / "old.pth")
    torch.save(old, old_path)
    resumed = make_trainer(env, monkeypatch, "3d_fullres", cls=_NoQueue)
    resumed.load_checkpoint(old_path)
    assert all(torch.equal(v, resumed.cmcl_model.heads.state_dict()[k]) for k, v in record["heads"].items())
    assert (resumed.best_retrieval, resumed.skipped_steps_total) == (0.625, 4)
    loaded = load_checkpoint_safely(old_path)
    assert channel_names_of(loaded) == {"0": "T1", "1": "T2"}
    assert f"{len(record['heads'])} in the CMCL heads" in "\n".join(describe(loaded))
    with pytest.raises(CMCLInputError, match="record has format 2"):
        cmcl_record({**checkpoint, "cmcl": {**record, "format": 2}})


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_untrained_global_embeddings_are_spread(env, monkeypatch, configuration):
    # nnU-Net's encoders end in InstanceNorm: pooled features share one dominant component, and an uncentred head
    # gave every sample and view nearly the same embedding (pairwise cosine 0.998, normalised std 0.04)
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, configuration, cls=nnUNetTrainerCMCL_global)
    trainer.on_train_start()
    for mode in ("train", "eval"):
        getattr(trainer.cmcl_model, mode)()
        with torch.no_grad():
            z = torch.cat([trainer.cmcl_model(next(trainer.dataloader_train)["data"])["global"].flatten(0, 1)
                           for _ in range(4)])
        cosine = (z @ z.T)[~torch.eye(len(z), dtype=torch.bool)]
        assert normalised_std(z) > 5 * trainer.cmcl_config.collapse_std_threshold, mode
        assert cosine.mean() < 0.5, mode


def test_adamw_decays_weights_but_not_norms_and_biases(env, monkeypatch):
    trainer = make_trainer(env, monkeypatch, "3d_fullres")
    trainer.initialize()
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == trainer.cmcl_config.weight_decay > 0 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    norm = trainer.cmcl_model.encoder.stages[0][0].convs[0].norm.weight
    assert any(p is norm for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(trainer.network.parameters()))


def test_dense_terms_on_the_stages_above_the_bottleneck_train_those_stages(env, monkeypatch):
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, "3d_fullres")  # the default: dense terms on 2 stages
    trainer.on_train_start()
    out, losses = trainer._forward_loss(next(trainer.dataloader_train))
    assert {"loss_dense", "loss_dense_stage1", "loss_dense_stage2"} <= set(losses)
    grids = trainer.cmcl_model.stage_grids  # each stage draws its own locations, capped by its own overlap
    for k, grid in enumerate(grids, start=1):
        m = min(trainer.cmcl_config.stage_locations, grid.available)
        assert grid.num_locations == m and out[f"inside_stage{k}"].shape == (trainer.batch_size, m)
        assert out[stage_key(k)].shape[:3] == (trainer.cmcl_model.sampler.num_views, trainer.batch_size, m)
    assert grids[1].available > trainer.cmcl_model.sampler.num_locations
    with open(trainer.log_file) as f:  # the start-up log states each stage's locations and what its overlap offers
        assert f"stage 2 above it {grids[1].num_locations} (overlap offers {grids[1].available})" in f.read()
    # the term of the stage above the bottleneck alone reaches that stage and its head, not the bottleneck stage
    losses["loss_dense_stage1"].backward()
    stages, heads = trainer.cmcl_model.encoder.stages, trainer.cmcl_model.heads

    def has_gradient(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert has_gradient(stages[-2]) and has_gradient(heads["dense_stage1"])
    assert not has_gradient(stages[-1]) and not has_gradient(heads["dense_stage2"]) and not has_gradient(heads["dense"])
    # more stages than the encoder has above its bottleneck: refused when the network is built
    too_many = type("TooMany", (nnUNetTrainerCMCL,), {"cmcl_config": replace(CMCLConfig(), dense_stages=9)})
    with pytest.raises(CMCLInputError, match="dense_stages=9 needs as many encoder stages"):
        make_trainer(env, monkeypatch, "3d_fullres", cls=too_many).initialize()


def captured_log(trainer, monkeypatch) -> list:
    lines = []
    monkeypatch.setattr(trainer, "print_to_log_file", lambda *args, **kwargs: lines.append(" ".join(map(str, args))))
    return lines


def test_default_embedding_metrics_come_from_the_dense_embeddings_and_warn_on_collapse(env, monkeypatch):
    # without a global head, embedding std, alignment and uniformity were NaN and the collapse warning never fired
    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, "3d_fullres")  # the default: dense terms only
    trainer.on_train_start()
    trainer.on_validation_epoch_start()
    with torch.no_grad():
        outputs = [trainer.validation_step(next(trainer.dataloader_val)) for _ in range(2)]
    trainer.on_validation_epoch_end(outputs)
    keys = ("val_dense_retrieval_top1", "val_embedding_std", "val_alignment", "val_uniformity")
    assert all(math.isfinite(trainer.logger.get_value(k, step=-1)) for k in keys)
    assert math.isnan(trainer.logger.get_value("val_retrieval_top1", step=-1))  # no global embeddings
    lines = captured_log(trainer, monkeypatch)
    trainer.log_validation_metrics()
    assert "dense embeddings: embedding std" in lines[0] and not any("WARNING" in line for line in lines)
    assert lines[0].startswith("dense retrieval top-1") and "nan" not in lines[0]  # the global term is off
    # the share of sampled locations inside the image, the bottleneck's and each stage's
    shares = [float(x) for x in lines[1].split(": ")[1].split(", ")]
    assert lines[1].startswith("dense locations inside the image") and len(shares) == 3
    assert all(0.0 <= x <= 1.0 for x in shares)
    collapsed = [{**o, "dense": torch.ones_like(o["dense"]) / o["dense"].shape[-1] ** 0.5} for o in outputs]
    trainer.on_validation_epoch_end(collapsed)
    trainer.log_validation_metrics()
    assert trainer.logger.get_value("val_embedding_std", step=-1) < trainer.cmcl_config.collapse_std_threshold
    assert "WARNING: dense embedding std is near 0" in lines[-1]


def test_grad_scaler_skips_are_counted_logged_and_recorded_and_the_optimizer_state_is_on_the_cpu(
        env, monkeypatch, tmp_path):
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(0)
    trainer = make_trainer(env, monkeypatch, "3d_fullres")
    trainer.on_train_start()
    trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)  # nnU-Net makes one on CUDA only
    trainer.on_train_epoch_start()
    batch = next(trainer.dataloader_train)
    # fp16 overflow as the scaler sees it: a finite loss, an inf gradient
    hook = next(trainer.cmcl_model.encoder.parameters()).register_hook(lambda g: torch.full_like(g, float("inf")))
    counter = count_train_step(trainer, batch)
    hook.remove()
    # the finite check and the scaler's own inf check; counting the skip reads nothing on the host
    assert dict(counter.syncs) == {"aten._local_scalar_dense.default": 2}
    losses = trainer.train_step(batch)
    lines = captured_log(trainer, monkeypatch)
    trainer.on_train_epoch_end([losses, losses])
    assert "grad scaler: 1 of 2 steps skipped for inf/NaN gradients (1 in all), scale 32768" in lines
    assert trainer.skipped_steps_total == 0  # the loss was finite: not a non-finite step

    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    assert cmcl_record(load_checkpoint_safely(path))["scaler_skipped_steps"] == 1
    resumed = make_trainer(env, monkeypatch, "3d_fullres")
    resumed.load_checkpoint(path)
    assert resumed.scaler_skips.total == 1

    # an optimizer state on CUDA (fake tensors: no GPU needed) is saved on the CPU, so that stock
    # -pretrained_weights (torch.load without map_location) reads the file on a machine without a GPU
    with FakeTensorMode():
        cuda_state = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3, device="cuda")}},
                      "param_groups": trainer.optimizer.state_dict()["param_groups"]}
    monkeypatch.setattr(trainer.optimizer, "state_dict", lambda: cuda_state)
    saved = {}
    monkeypatch.setattr(trainer_module, "save_atomically", lambda checkpoint, filename: saved.update(checkpoint))
    trainer.save_checkpoint(path)
    assert all(v.device.type == "cpu" for v in saved["optimizer_state"]["state"][0].values())


def test_cascade_configuration_is_refused_before_the_network(env, monkeypatch):
    # 3d_cascade_fullres appends 3d_lowres's one-hot segmentation to the input: channels of no modality
    cascade = {"3d_lowres": {"inherits_from": "3d_fullres", "next_stage": "3d_cascade_fullres"},
               "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}
    with pytest.raises(CMCLInputError, match="3d_cascade_fullres is a cascade stage.*use 3d_fullres or 2d"):
        make_trainer(env, monkeypatch, "3d_cascade_fullres", configurations=cascade)

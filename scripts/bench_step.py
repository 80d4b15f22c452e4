"""Step time and memory of a CMCL step against a vanilla nnU-Net step, measured side by side.

Both trainers are built from the same preprocessed dataset, plans and batch; steps alternate (vanilla, CMCL,
vanilla, ...) so that drift of the machine hits both alike. Prints medians with min and max and ends with
    cmcl/vanilla step time ratio: R (min A, max B)
where A and B are the ratios of the per-pair minima and maxima.

    python scripts/bench_step.py -d 501 -c 3d_fullres --device cpu --steps 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunet_cmcl.losses import cmcl_loss
from nnunet_cmcl.trainer import nnUNetTrainerCMCL


def build(cls, dataset: str, configuration: str, plans_identifier: str, device: torch.device):
    folder = join(nnUNet_preprocessed, dataset)
    plans = load_json(join(folder, plans_identifier + ".json"))
    plans["continue_training"] = False
    trainer = cls(plans, configuration, "all", load_json(join(folder, "dataset.json")), device)
    trainer.print_to_log_file = lambda *args, **kwargs: None  # keep the benchmark's output readable
    trainer.on_train_start()
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_step(trainer, batch, device: torch.device) -> tuple[float, float]:
    """(seconds, peak GiB on CUDA or nan) of one train_step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    trainer.train_step(batch)
    sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return elapsed, peak


def heads_and_loss_time(trainer, batch, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of heads + loss, forward and backward, on detached bottleneck features of the batch."""
    model, config = trainer.cmcl_model, trainer.cmcl_config
    with torch.no_grad():
        views, offsets = model.sampler(batch["data"].to(device))
        bottleneck = model.encoder(views)[-1]
    v, b = model.sampler.num_views, batch["data"].shape[0]
    times = []
    for _ in range(repeats):
        features = bottleneck.detach().requires_grad_()
        sync(device)
        start = time.perf_counter()
        positions, flat_index = model.sampler.sample_locations(offsets)
        out = {"global": model.heads["global"](features).view(v, b, -1),
               "dense": model.heads["dense"](features, flat_index.reshape(v * b, -1)).view(v, b, flat_index.shape[-1], -1),
               "positions": positions}
        cmcl_loss(out, config.temperature, 1.0, 1.0, config.dense_exclusion_radius)["loss"].backward()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summary(name: str, values: list[float], unit: str = "s") -> str:
    return f"{name}: median {statistics.median(values):.4f} {unit} (min {min(values):.4f}, max {max(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or id (preprocessed)")
    parser.add_argument("-c", default="3d_fullres", help="configuration")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each trainer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cudnn autotune, compile)")
    parser.add_argument("--with-dataloader", action="store_true",
                        help="also time steps that include fetching the batch from nnU-Net's dataloader")
    args = parser.parse_args()

    device = torch.device(args.device)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="bench_results_")  # keep real results untouched
    dataset = maybe_convert_to_dataset_name(args.d if args.d.startswith("Dataset") else int(args.d))
    vanilla = build(nnUNetTrainer, dataset, args.c, args.p, device)
    cmcl = build(nnUNetTrainerCMCL, dataset, args.c, args.p, device)
    batches = [next(vanilla.dataloader_train) for _ in range(4)]  # the same batches for both trainers
    print(f"{dataset} {args.c} {args.p} on {device}: batch {tuple(batches[0]['data'].shape)}, "
          f"CMCL views {cmcl.cmcl_model.sampler.num_views} x crop {cmcl.cmcl_model.sampler.crop_size}")

    for i in range(args.warmup):
        timed_step(vanilla, batches[i % 4], device)
        timed_step(cmcl, batches[i % 4], device)
    t_vanilla, t_cmcl, m_vanilla, m_cmcl = [], [], [], []
    for i in range(args.steps):
        for trainer, times, memory in ((vanilla, t_vanilla, m_vanilla), (cmcl, t_cmcl, m_cmcl)):
            seconds, peak = timed_step(trainer, batches[i % 4], device)
            times.append(seconds)
            memory.append(peak)
    print("compute only (batch already loaded):")
    print("  " + summary("vanilla step", t_vanilla))
    print("  " + summary("CMCL step   ", t_cmcl))
    if device.type == "cuda":
        print(f"  peak memory: vanilla {max(m_vanilla):.2f} GiB, CMCL {max(m_cmcl):.2f} GiB, "
              f"ratio {max(m_cmcl) / max(m_vanilla):.3f}")
    head_share = heads_and_loss_time(cmcl, batches[0], device) / statistics.median(t_cmcl)
    print(f"  heads + loss: {100 * head_share:.1f} % of the CMCL step")
    print("  batches loaded per step: vanilla 1, CMCL 1 (all views are cut from the one loaded patch)")

    if args.with_dataloader:
        loaded = {"vanilla": [], "cmcl": []}
        for _ in range(args.steps):
            for name, trainer in (("vanilla", vanilla), ("cmcl", cmcl)):
                sync(device)
                start = time.perf_counter()
                trainer.train_step(next(trainer.dataloader_train))
                sync(device)
                loaded[name].append(time.perf_counter() - start)
        print("with nnU-Net's dataloader:")
        print("  " + summary("vanilla step", loaded["vanilla"]))
        print("  " + summary("CMCL step   ", loaded["cmcl"]))

    ratios = [c / v for c, v in zip(t_cmcl, t_vanilla)]
    print(f"cmcl/vanilla step time ratio: {statistics.median(t_cmcl) / statistics.median(t_vanilla):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    for trainer in (vanilla, cmcl):  # stop the augmentation workers; nothing is saved
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()


if __name__ == "__main__":
    main()

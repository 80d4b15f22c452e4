"""Step time and memory of a CMCL step against a vanilla nnU-Net step, measured side by side.

Both trainers are built from the same preprocessed dataset, plans and batch; steps alternate (vanilla, CMCL,
vanilla, ...) so that drift of the machine hits both alike. Prints medians with min and max and ends with
    cmcl/vanilla step time ratio: R (min A, max B)
where A and B are the ratios of the per-pair minima and maxima.

    python scripts/bench_step.py -d 501 -c 3d_fullres --device cpu --steps 20
    python scripts/bench_step.py ... --set dense_stages=0      # CMCLConfig changes for the CMCL trainer
    python scripts/bench_step.py ... --dense-curve 64 512      # other M for the dense term's cost curve

The cost curve of the dense term runs unless --no-dense-curve is given; --dense-curve without numbers runs it at
the default M. queue_size and key_momentum change nothing unless weight_global > 0 (no key queue without the
global term).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace

import torch
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunet_cmcl.host_syncs import count_train_step
from nnunet_cmcl.pretraining.losses import CMCLLoss
from nnunet_cmcl.pretraining.config import parse_changes
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL

DENSE_CURVE = [8, 16, 27, 64, 128, 256, 512]  # numbers of dense locations M of the dense term's cost curve

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


def saved_for_backward_bytes(trainer, batch) -> int:
    """Bytes of the activations autograd keeps for backward during one train_step (parameters left out).

    Activations dominate a training step's peak memory, and this count is the same on any device, so it
    compares the two steps on the CPU too. Storages are counted once (views of one tensor share one).
    """
    parameters = {p.untyped_storage().data_ptr() for p in trainer.network.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.train_step(batch)
    return sum(storages.values())


def dense_cost_curve(trainer, batch_size: int, locations: list[int], device: torch.device,
                     repeats: int = 5) -> list[tuple[int, float]]:
    """(M, median seconds) of the dense head + dense loss, forward and backward, for M sampled locations.

    Runs on random bottleneck features of the plans' channel count, flattened to a grid with room for M
    distinct locations, so M can go past what the plans' views overlap in.
    """
    model, loss_fn = trainer.cmcl_model, CMCLLoss(trainer.cmcl_config)
    v, channels = model.sampler.num_views, trainer.cmcl_model.encoder.output_channels[-1]
    rows = []
    for m in locations:
        side = math.ceil(m ** (1 / 3)) + 1
        grid = torch.stack(torch.meshgrid(*[torch.arange(side, device=device)] * 3, indexing="ij"), -1).view(-1, 3)
        times = []
        for _ in range(repeats):
            features = torch.randn(v * batch_size, channels, side ** 3, device=device, requires_grad=True)
            chosen = torch.rand(batch_size, side ** 3, device=device).topk(m, dim=1).indices  # (B, M) distinct
            sync(device)
            start = time.perf_counter()
            dense = model.heads["dense"](features, chosen.repeat(v, 1)).view(v, batch_size, m, -1)
            out = {"dense": dense, "positions": grid[chosen]}
            loss_fn(out)["loss"].backward()
            sync(device)
            times.append(time.perf_counter() - start)
        rows.append((m, statistics.median(times)))
    return rows


def cases_loaded_per_step(trainer, steps: int = 3) -> float | None:
    """Mean number of nnU-Net dataset reads (load_case) per fetched-and-trained step; None with worker processes."""
    loader = trainer.dataloader_train
    if not isinstance(loader, SingleThreadedAugmenter):
        return None
    dataset = loader.data_loader._data
    calls = []
    original = dataset.load_case

    def counting_load_case(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    dataset.load_case = counting_load_case
    try:
        for _ in range(steps):
            trainer.train_step(next(loader))
    finally:
        dataset.load_case = original
    return len(calls) / steps


def heads_and_loss_time(trainer, batch, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of heads + loss, forward and backward, on detached encoder features of the batch."""
    model, loss_fn = trainer.cmcl_model, CMCLLoss(trainer.cmcl_config)
    with torch.no_grad():
        views, geometry = model.sampler(batch["data"].to(device))
        skips = model.encoder(views)
    times = []
    for _ in range(repeats):
        features = [s.detach().requires_grad_() for s in skips]
        sync(device)
        start = time.perf_counter()
        out = model.project(features, geometry)
        loss_fn(out)["loss"].backward()
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
    parser.add_argument("--dense-curve", type=int, nargs="*", metavar="M", default=None,
                        help="numbers of dense locations M for the cost curve of the dense term; the curve runs "
                             f"by default, and the option without numbers gives the default M {DENSE_CURVE}")
    parser.add_argument("--no-dense-curve", action="store_true", help="skip the cost curve of the dense term")
    parser.add_argument("--set", default="", help="CMCLConfig changes for the CMCL trainer, e.g. dense_stages=0, "
                                                  "or weight_global=1,queue_size=0 (the queue needs the global term)")
    parser.add_argument("--with-dataloader", action="store_true",
                        help="also time steps that include fetching the batch from nnU-Net's dataloader")
    args = parser.parse_args()

    device = torch.device(args.device)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="bench_results_")  # keep real results untouched
    dataset = maybe_convert_to_dataset_name(args.d if args.d.startswith("Dataset") else int(args.d))
    vanilla = build(nnUNetTrainer, dataset, args.c, args.p, device)
    cmcl_class = type("nnUNetTrainerCMCL_bench", (nnUNetTrainerCMCL,), {
        "cmcl_config": replace(nnUNetTrainerCMCL.cmcl_config, **parse_changes(args.set))})
    cmcl = build(cmcl_class, dataset, args.c, args.p, device)
    batches = [next(vanilla.dataloader_train) for _ in range(4)]  # the same batches for both trainers
    print(f"{dataset} {args.c} {args.p} on {device}: batch {tuple(batches[0]['data'].shape)}, "
          f"CMCL views {cmcl.cmcl_model.sampler.num_views} x crop {cmcl.cmcl_model.sampler.crop_size}, "
          f"key queue {'on' if cmcl.key_queue is not None else 'off'}")

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
    saved = [saved_for_backward_bytes(trainer, batches[0]) / 2**20 for trainer in (vanilla, cmcl)]
    print(f"  activations saved for backward: vanilla {saved[0]:.1f} MiB, CMCL {saved[1]:.1f} MiB, "
          f"ratio {saved[1] / saved[0]:.3f}")
    counters = [count_train_step(trainer, batches[0]) for trainer in (vanilla, cmcl)]
    print(f"  host syncs in one step (values read on the host, data-dependent shapes, device-to-host copies, "
          f"these seen only on CUDA): vanilla {counters[0].total} {dict(counters[0].syncs)}, "
          f"CMCL {counters[1].total} {dict(counters[1].syncs)}; tensors built from Python data: "
          f"vanilla {counters[0].from_python_data}, CMCL {counters[1].from_python_data}")
    head_share = heads_and_loss_time(cmcl, batches[0], device) / statistics.median(t_cmcl)
    print(f"  heads + loss: {100 * head_share:.1f} % of the CMCL step "
          f"({cmcl.cmcl_model.sampler.num_locations} dense locations)")
    curve = [] if args.no_dense_curve else args.dense_curve or DENSE_CURVE  # bare --dense-curve: the default M
    if curve and "dense" in cmcl.cmcl_model.heads:
        print("  dense head + loss as the number of locations M grows (random features, same batch and heads):")
        for m, seconds in dense_cost_curve(cmcl, batches[0]["data"].shape[0], curve, device):
            print(f"    M {m:4d}: {1000 * seconds:8.2f} ms = {100 * seconds / statistics.median(t_cmcl):5.1f} % "
                  f"of the CMCL step")

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
        counts = {name: cases_loaded_per_step(trainer) for name, trainer in (("vanilla", vanilla), ("cmcl", cmcl))}
        if None in counts.values():
            print("  cases loaded per step: counted only with in-process loading (nnUNet_n_proc_DA=0)")
        else:
            print(f"  cases loaded per step: vanilla {counts['vanilla']}, CMCL {counts['cmcl']} "
                  f"(batch {batches[0]['data'].shape[0]}; every CMCL view is cut from the loaded patch)")

    ratios = [c / v for c, v in zip(t_cmcl, t_vanilla)]
    print(f"cmcl/vanilla step time ratio: {statistics.median(t_cmcl) / statistics.median(t_vanilla):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    for trainer in (vanilla, cmcl):  # stop the augmentation workers; nothing is saved
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()


if __name__ == "__main__":
    main()

"""GPU speed and memory of every paper method, on CIFAR-shaped random data (no download).

Per model (the paper's CIFAR ResNet-50 and ViT) it prints one epoch of plain training (the original's recipe)
and, for finetune / prune_finetune / lora / prunelora / prunelora_remove (channels removed), the steady-state seconds per unlearning epoch (the
second of two epochs), images/s, and peak GPU memory (torch.cuda.max_memory_allocated after a reset), then
checks the targets against Fine-tune measured in the same run: on ResNet-50, PruneLoRA's epoch at most 0.9x
Fine-tune's and its peak memory at most 0.8x (the paper's T4: 0.89x and 0.80x), Fine-tune at 12,000 images/s
or more and PruneLoRA at 13,000 or more; on the ViT, PruneLoRA's peak memory at most 0.5x Fine-tune's.

    python benchmarks/gpu.py                       # 45,000 train images, on CUDA
    python benchmarks/gpu.py --device cpu --n-train 512 --models resnet50-tiny   # a quick check anywhere
    python benchmarks/gpu.py --json gpu.json       # the figures with versions and device, as JSON
    python benchmarks/gpu.py --methods finetune,prunelora cuda_graphs=false   # the eager path, two methods
    python benchmarks/gpu.py --profile prof.txt    # also where a step's time goes (torch.profiler), per method
    python benchmarks/gpu.py --cudnn-benchmark     # let cuDNN time its algorithms for each shape first

With CUDA graphs each method's figures also hold the peak memory so far at the graph's phase boundaries
(`graph_memory`: after the eager warm-up steps, after recording, and what stays allocated across recording),
to tell which phase sets the peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from prunelora.config import load_config
from prunelora.data import ImageData, make_splits
from prunelora.engine.loop import fit, recipe_from
from prunelora.engine.meter import CostMeter
from prunelora.methods import UnlearnTask
from prunelora.models import create_model
from prunelora.store.environment import environment
from prunelora.store.files import atomic_write
from prunelora.workflows.experiment import make_context, resolve_config
from prunelora.workflows.unlearn import unlearn_one

METHODS = ("finetune", "prune_finetune", "lora", "prunelora", "prunelora_remove")
PROFILE_STEPS = 20  # training steps per profiled method (one epoch, BatchNorm as trained: no recalibration pass)
# PruneLoRA with the pruned channels taken out (pruning.mode=remove): the smaller, faster model
VARIANT = ["variants.prunelora_remove.method=prunelora", "variants.prunelora_remove.pruning.mode=remove"]


def synthetic(n_train: int, n_test: int, seed: int = 0) -> ImageData:
    """CIFAR-10-shaped uint8 images and labels drawn at random (speed does not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return ImageData("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], [str(i) for i in range(10)],
                     (0.5,) * 3, (0.25,) * 3, "crop_flip")


def setup(name: str, device: str, n_train: int, extra: list[str], epochs: int = 2):
    """Config, context, data, splits and a freshly initialised model (trained by the caller)."""
    cfg = resolve_config(load_config(overrides=[f"model.name={name}", "data.name=cifar10", f"device={device}",
                                                "train.epochs=1", f"unlearn.epochs={epochs}", *VARIANT, *extra]))
    ctx = make_context(cfg, progress=False)
    data = synthetic(n_train, 1000).to(ctx.device) if ctx.device.type == "cuda" else synthetic(n_train, 1000)
    splits = make_splits(data.y_train.cpu(), data.y_test.cpu(), [3])
    torch.manual_seed(0)
    model = ctx.prepare_model(create_model(cfg.model, 10, 3, 32))
    return cfg, ctx, data, splits, model


GRAPH_MEMORY: list[dict] = []  # filled by the wrapper `watch_graph_memory` installs, one entry per recording


def watch_graph_memory() -> None:
    """Note the peak and current CUDA memory (MB) before and after each CUDA-graph recording."""
    from prunelora.engine import graphs

    record = graphs.GraphedStep._record

    def watched(self) -> None:
        mb = 2**20
        entry = {"peak_after_warmup_mb": torch.cuda.max_memory_allocated() / mb,
                 "allocated_before_recording_mb": torch.cuda.memory_allocated() / mb}
        record(self)
        torch.cuda.synchronize()
        entry |= {"peak_after_recording_mb": torch.cuda.max_memory_allocated() / mb,
                  "allocated_after_recording_mb": torch.cuda.memory_allocated() / mb}
        GRAPH_MEMORY.append(entry)

    graphs.GraphedStep._record = watched


def bench_model(name: str, device: str, n_train: int, extra: list[str], methods: list[str]) -> dict:
    cfg, ctx, data, splits, model = setup(name, device, n_train, extra)
    graph_memory = {}
    ctx.meter = CostMeter(ctx.device)
    with ctx.meter.measure():
        history = fit(model, data, torch.arange(n_train), recipe_from(cfg.train), ctx, desc="train")
    rows = {"train (1 epoch)": (history[-1]["seconds"], n_train, ctx.meter.peak_mb)}
    task = UnlearnTask(data, splits, cfg)
    for method in methods:
        GRAPH_MEMORY.clear()
        _, record = unlearn_one(method, model, task, ctx)
        rows[method] = (record["history"][-1]["seconds"], len(splits.retain), record["peak_memory_mb"])
        graph_memory[method] = list(GRAPH_MEMORY)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "memory": ctx.meter.kind, "graph_memory": graph_memory,
            "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu"}


def profile_methods(name: str, device: str, extra: list[str], methods: list[str]) -> dict:
    """Where a training step's time goes, per method: wall time, summed kernel time and kernel launches per
    step, and the kernels that take the most time (torch.profiler over PROFILE_STEPS steps of one epoch)."""
    from torch.profiler import ProfilerActivity, profile

    n = 128 * PROFILE_STEPS + 256  # + the forget class's share, so the retain set still fills PROFILE_STEPS batches
    cfg, ctx, data, splits, model = setup(name, device, n, [*extra, "unlearn.bn=train"], epochs=1)
    task = UnlearnTask(data, splits, cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    out = {}
    for method in methods:
        unlearn_one(method, model, task, ctx)  # warm: cuDNN and cuBLAS handles, kernels loaded
        with profile(activities=activities) as prof:
            _, record = unlearn_one(method, model, task, ctx)
        steps = len(splits.retain) // cfg.unlearn.batch_size
        # kernels only (an operator's device time repeats its kernels'); on the CPU there are no kernels: the
        # operators' own CPU time stands in for them
        cuda = ctx.device.type == "cuda"
        field = "self_device_time_total" if cuda else "self_cpu_time_total"
        kernels = [e for e in prof.key_averages() if not cuda or e.device_type.name == "CUDA"]
        kernels.sort(key=lambda e: -getattr(e, field, 0))
        busy_us = sum(getattr(e, field, 0) for e in kernels)
        launches = sum(e.count for e in prof.key_averages() if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                         "cudaLaunchKernelExC", "cudaGraphLaunch"))
        out[method] = {
            "steps": steps, "wall_ms_per_step": 1000 * record["history"][-1]["seconds"] / steps,
            "kernel_ms_per_step": busy_us / 1000 / steps, "launches_per_step": launches / steps,
            "top": [(e.key[:60], e.count // steps, getattr(e, field, 0) / 1000 / steps) for e in kernels[:8]],
        }
    return out


def checks_for(name: str, rows: dict) -> list[tuple[str, bool, str]]:
    """The targets of the run's rows, each measured against Fine-tune in the same run: for PruneLoRA as the
    paper runs it (channels zeroed) and, on ResNet-50, also with the channels removed, where fewer bytes move."""
    out = []
    if "finetune" not in rows:
        return out
    ft_s, ft_n, ft_mb = rows["finetune"]
    if name.startswith("resnet50"):
        out.append((f"{name}: Fine-tune >= 12000 images/s", ft_n / ft_s >= 12_000, f"{ft_n / ft_s:.0f}"))
    for method, label in (("prunelora", "PruneLoRA"), ("prunelora_remove", "PruneLoRA (channels removed)")):
        if method not in rows or (method == "prunelora_remove" and not name.startswith("resnet50")):
            continue
        pl_s, pl_n, pl_mb = rows[method]
        if name.startswith("resnet50"):
            out.append((f"{name}: {label} epoch <= 0.9 x Fine-tune's", pl_s <= 0.9 * ft_s, f"{pl_s / ft_s:.2f}x"))
            out.append((f"{name}: {label} peak memory <= 0.8 x Fine-tune's", pl_mb <= 0.8 * ft_mb,
                        f"{pl_mb / ft_mb:.2f}x"))
            out.append((f"{name}: {label} >= 13000 images/s", pl_n / pl_s >= 13_000, f"{pl_n / pl_s:.0f}"))
        else:
            out.append((f"{name}: {label} peak memory <= 0.5 x Fine-tune's", pl_mb <= 0.5 * ft_mb,
                        f"{pl_mb / ft_mb:.2f}x"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-train", type=int, default=45_000)
    parser.add_argument("--models", default="resnet50,vit-paper")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from " + ", ".join(METHODS))
    parser.add_argument("--json", help="also write the figures, checks and environment to this JSON file")
    parser.add_argument("--profile", help="also profile finetune and prunelora steps; the table goes to this file")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. compile=true")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.device.startswith("cuda"):
        watch_graph_memory()
    methods = args.methods.split(",")
    start = time.perf_counter()
    checks, figures, profiles = [], {}, {}
    for name in args.models.split(","):
        out = bench_model(name, args.device, args.n_train, args.overrides, methods)
        figures[name] = {step: {"seconds_per_epoch": sec, "images_per_s": n / sec, "peak_memory_mb": peak}
                         for step, (sec, n, peak) in out["rows"].items()}
        for method, entries in out["graph_memory"].items():
            figures[name][method]["graph_memory"] = entries
        print(f"\n{name} on {out['device']}, batch 128, {args.n_train} train images; memory: {out['memory']}")
        print(f"  {'step':<16}{'s/epoch':>9}{'img/s':>9}{'peak MB':>10}")
        for step, (seconds, n, peak) in out["rows"].items():
            print(f"  {step:<16}{seconds:9.2f}{n / seconds:9.0f}{peak:10.0f}")
        for method, entries in out["graph_memory"].items():
            for e in entries[:1]:  # the first recording of the method's fit (BatchNorm recalibration adds none)
                print(f"  {method}: CUDA graph memory, MB: peak {e['peak_after_warmup_mb']:.0f} after warm-up, "
                      f"{e['peak_after_recording_mb']:.0f} after recording; allocated {e['allocated_before_recording_mb']:.0f}"
                      f" -> {e['allocated_after_recording_mb']:.0f} across recording")
        checks += checks_for(name, out["rows"])
        if args.profile:
            try:  # the figures above stand without it
                profiles[name] = profile_methods(name, args.device, args.overrides,
                                                 [m for m in ("finetune", "prunelora") if m in methods])
            except Exception as error:  # noqa: BLE001 - reported in the output and the JSON
                profiles[name] = {"error": f"{type(error).__name__}: {error}"}
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}: {value}")
    if args.profile:
        atomic_write(args.profile, profile_table(profiles))
        print(profile_table(profiles))
    print(f"total {time.perf_counter() - start:.0f} s; torch {torch.__version__}")
    if args.json:
        device = torch.device(args.device)
        record = {"args": vars(args), "environment": environment(device, CostMeter(device).kind), "figures": figures,
                  "checks": [{"target": label, "met": ok, "value": value} for label, ok, value in checks],
                  "profile": profiles}
        atomic_write(args.json, json.dumps(record, indent=2))


def profile_table(profiles: dict) -> str:
    lines = []
    for name, per_method in profiles.items():
        if "error" in per_method:
            lines.append(f"{name}: profile failed: {per_method['error']}")
            continue
        for method, p in per_method.items():
            lines.append(f"{name} {method}: {p['wall_ms_per_step']:.2f} ms per step wall, {p['kernel_ms_per_step']:.2f} ms "
                         f"of kernels, {p['launches_per_step']:.0f} launches per step ({p['steps']} steps profiled)")
            lines += [f"    {ms:8.3f} ms  x{count:<4} {key}" for key, count, ms in p["top"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

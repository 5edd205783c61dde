"""GPU speed and memory of every paper method, on CIFAR-shaped random data (no download).

Per model (the paper's CIFAR ResNet-50 and ViT) it prints one epoch of plain training (the original's recipe)
and, for finetune / prune_finetune / lora / prunelora / prunelora_remove (channels removed), the steady-state seconds per unlearning epoch (the
second of two epochs), images/s, and peak GPU memory (torch.cuda.max_memory_allocated after a reset), then
checks the targets: a ResNet-50 PruneLoRA epoch within 10 s, PruneLoRA's peak memory at most half of Fine-tune's.

    python benchmarks/gpu.py                       # 45,000 train images, on CUDA
    python benchmarks/gpu.py --device cpu --n-train 512 --models resnet50-tiny   # a quick check anywhere
    python benchmarks/gpu.py --json gpu.json       # the figures with versions and device, as JSON
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from prunelora.config import load_config
from prunelora.data import ImageData, make_splits
from prunelora.engine import fit, recipe_from
from prunelora.environment import environment
from prunelora.experiment import make_context, resolve_config
from prunelora.files import atomic_write
from prunelora.meter import CostMeter
from prunelora.methods import UnlearnTask
from prunelora.methods.run import unlearn_one
from prunelora.models import create_model

METHODS = ("finetune", "prune_finetune", "lora", "prunelora", "prunelora_remove")
# PruneLoRA with the pruned channels taken out (pruning.mode=remove): the smaller, faster model
VARIANT = ["variants.prunelora_remove.method=prunelora", "variants.prunelora_remove.pruning.mode=remove"]


def synthetic(n_train: int, n_test: int, seed: int = 0) -> ImageData:
    """CIFAR-10-shaped uint8 images and labels drawn at random (speed does not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return ImageData("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], [str(i) for i in range(10)],
                     (0.5,) * 3, (0.25,) * 3, "crop_flip")


def bench_model(name: str, device: str, n_train: int, extra: list[str]) -> dict:
    cfg = resolve_config(load_config(overrides=[f"model.name={name}", "data.name=cifar10", f"device={device}",
                                                "train.epochs=1", "unlearn.epochs=2", *VARIANT, *extra]))
    ctx = make_context(cfg, progress=False)
    data = synthetic(n_train, 1000).to(ctx.device) if ctx.device.type == "cuda" else synthetic(n_train, 1000)
    splits = make_splits(data.y_train.cpu(), data.y_test.cpu(), [3])
    torch.manual_seed(0)
    model = ctx.prepare_model(create_model(cfg.model, 10, 3, 32))
    ctx.meter = CostMeter(ctx.device)
    with ctx.meter.measure():
        history = fit(model, data, torch.arange(n_train), recipe_from(cfg.train), ctx, desc="train")
    rows = {"train (1 epoch)": (history[-1]["seconds"], n_train, ctx.meter.peak_mb)}
    task = UnlearnTask(data, splits, cfg)
    for method in METHODS:
        _, record = unlearn_one(method, model, task, ctx)
        rows[method] = (record["history"][-1]["seconds"], len(splits.retain), record["peak_memory_mb"])
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "memory": ctx.meter.kind, "device": torch.cuda.get_device_name(ctx.device)
            if ctx.device.type == "cuda" else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-train", type=int, default=45_000)
    parser.add_argument("--models", default="resnet50,vit-paper")
    parser.add_argument("--json", help="also write the figures, checks and environment to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. compile=true")
    args = parser.parse_args()
    start = time.perf_counter()
    checks, figures = [], {}
    for name in args.models.split(","):
        out = bench_model(name, args.device, args.n_train, args.overrides)
        figures[name] = {step: {"seconds_per_epoch": sec, "images_per_s": n / sec, "peak_memory_mb": peak}
                         for step, (sec, n, peak) in out["rows"].items()}
        print(f"\n{name} on {out['device']}, batch 128, {args.n_train} train images; memory: {out['memory']}")
        print(f"  {'step':<16}{'s/epoch':>9}{'img/s':>9}{'peak MB':>10}")
        for step, (seconds, n, peak) in out["rows"].items():
            print(f"  {step:<16}{seconds:9.2f}{n / seconds:9.0f}{peak:10.0f}")
        rows = out["rows"]
        if name.startswith("resnet50"):
            checks.append(("ResNet-50 PruneLoRA epoch <= 10 s", rows["prunelora"][0] <= 10.0, f"{rows['prunelora'][0]:.2f} s"))
        ratio = rows["prunelora"][2] / rows["finetune"][2]
        checks.append((f"{name}: PruneLoRA peak memory <= 0.5 x Fine-tune's", ratio <= 0.5, f"{ratio:.2f}x"))
        ratio = rows["prunelora_remove"][2] / rows["finetune"][2]
        checks.append((f"{name}: PruneLoRA (channels removed) peak memory <= 0.5 x Fine-tune's", ratio <= 0.5,
                       f"{ratio:.2f}x"))
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}: {value}")
    print(f"total {time.perf_counter() - start:.0f} s; torch {torch.__version__}")
    if args.json:
        device = torch.device(args.device)
        record = {"args": vars(args), "environment": environment(device, CostMeter(device).kind), "figures": figures,
                  "checks": [{"target": label, "met": ok, "value": value} for label, ok, value in checks]}
        atomic_write(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

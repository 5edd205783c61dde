"""Does pruning pay? One run prints, as ratios, on this machine:

1. each method's unlearning time / retrain's, and peak memory / Fine-tune's, on the default comparison
   with PruneLoRA in both pruning modes (`prunelora run`, seed 0; original and retrain from the cache when there);
2. quality of pruning.mode=remove against mode=mask (UA, RA, TA; over `--seeds`);
3. inference latency and FLOPs of the dense, mask-pruned and channel-removed model (the default model on the
   default data, and the same architecture at width 64 on 32x32 inputs, CIFAR's size);
4. the training loop's throughput as a share of this machine's fp32 matmul rate (from throughput.py).

    python benchmarks/performance.py [--seeds 0,1,2] [--skip-run]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from throughput import loop_benchmark, matmul_gflops

from prunelora.config import load_config
from prunelora.data import load_dataset
from prunelora.engine.context import set_threads
from prunelora.models import MODELS, arch_of, classifier_name, create_model, select_layers
from prunelora.models.pruning import prune_l2_structured, remove_channels
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.run import run

METHODS = ["retrain", "finetune", "prune_finetune", "lora", "prunelora", "prunelora_remove"]
VARIANT = ["variants.prunelora_remove.method=prunelora", "variants.prunelora_remove.pruning.mode=remove"]


def comparison(seeds: list[int]) -> None:
    cfg = load_config(overrides=[f"methods=[{','.join(METHODS)}]", f"seeds={seeds}", *VARIANT])
    results = run(cfg, progress=False, log=lambda *a: None)
    by = {}
    for r in results["runs"]:
        by.setdefault(r["method"], []).append(r["metrics"])
    mean = lambda name, key: statistics.mean(m[key] for m in by[name])
    print(f"\n== unlearning cost (mean over seeds {seeds}; time / retrain, peak memory / finetune)")
    for name in METHODS[1:]:
        print(f"{name:>18}: time {mean(name, 'time_s'):6.1f} s = {mean(name, 'time_vs_retrain'):.2f}x retrain, "
              f"{mean(name, 'loop_s_per_epoch'):.2f} s/epoch in the loop + {mean(name, 'one_off_s'):.1f} s one-off; peak {mean(name, 'peak_memory_mb'):6.1f} MB = "
              f"{mean(name, 'peak_memory_mb') / mean('finetune', 'peak_memory_mb'):.2f}x finetune")
    print(f"\n== quality, mode=remove vs mode=mask (mean over seeds {seeds}; then each seed, mask / remove)")
    for key in ("UA", "MIA", "RA", "TA"):
        a, b = mean("prunelora", key), mean("prunelora_remove", key)
        each = ", ".join(f"{m[key]:.2f} / {r[key]:.2f}" for m, r in zip(by["prunelora"], by["prunelora_remove"]))
        print(f"{key:>4}: mask {a:6.2f}  remove {b:6.2f}  difference {b - a:+6.2f}   ({each})")


def latency_ms(model, x: torch.Tensor, reps: int = 30) -> float:
    model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def inference(overrides: list[str], size: int, batch: int, label: str) -> None:
    import torch_pruning as tp

    cfg = resolve_config(load_config(overrides=overrides))
    spec = MODELS.get(cfg.model.name)
    dense = create_model(cfg.model, 10, 1, size).eval()
    names = select_layers(dense, spec.family, cfg.pruning.targets, "prune", arch_of(cfg.model).get("depth"))
    masked, removed = copy.deepcopy(dense), copy.deepcopy(dense)
    prune_l2_structured(masked, names, cfg.pruning.amount)
    remove_channels(removed, names, cfg.pruning.amount, classifier_name(removed), torch.zeros(1, 1, size, size))
    x = torch.randn(batch, 1, size, size)
    print(f"\n== inference, {label}: batch {batch} of {size}x{size}, median of 30 forward passes")
    base = None
    for name, model in (("dense", dense), ("mask-pruned", masked), ("channels removed", removed)):
        macs, params = tp.utils.count_ops_and_params(model, x[:1])
        ms = latency_ms(model, x)
        base = base or (ms, macs)
        print(f"{name:>18}: {ms:8.2f} ms ({base[0] / ms:4.2f}x dense speed), {2 * macs / 1e6:8.1f} MFLOP/image "
              f"({macs / base[1]:.2f}x), {params / 1e6:.2f} M params")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--skip-run", action="store_true", help="only the inference and loop figures")
    args = parser.parse_args()
    threads = set_threads(None)
    print(f"torch {torch.__version__}, {threads} threads; fp32 matmul rate {matmul_gflops():.1f} GFLOP/s")
    if not args.skip_run:
        comparison([int(s) for s in args.seeds.split(",")])
    data = load_dataset(load_config().data)
    inference([], data.image_size, 360, "default model (resnet18-tiny, width 32)")
    inference(["model.name=resnet18"], 32, 32, "resnet18 width 64 at CIFAR size")
    inference(["model.name=vit-tiny", "pruning.targets=all"], 32, 32, "vit-tiny, every attention/MLP block pruned")
    print("\n== training loop")
    loop_benchmark(resolve_config(load_config()))


if __name__ == "__main__":
    main()

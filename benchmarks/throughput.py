"""Speed figures of the main job on this machine.

Prints (1) this machine's fp32 matmul rate, (2) the training loop's throughput for the default model
(images/s and achieved GFLOP/s, counted with torch.utils.flop_counter, as a share of the matmul rate),
fine-tuning vs LoRA vs PruneLoRA steps, interleaved and repeated so that noise hits all alike, and
(3) the default comparison's per-method time and peak memory (one full `prunelora run`).

    python benchmarks/throughput.py [--skip-run] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import copy
import re
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from prunelora.config import load_config
from prunelora.data import load_dataset
from prunelora.engine.context import set_threads
from prunelora.models import MODELS, arch_of, create_model, select_layers
from prunelora.models.adapters import add_lora
from prunelora.models.pruning import prune_l2_structured
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.run import run


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_fn(model, x, y):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_steps(step, n: int) -> float:
    step()  # warm-up: first use of each shape builds its kernels
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def loop_benchmark(cfg, reps: int = 3, steps: int = 10) -> None:
    data = load_dataset(cfg.data)
    size, chans, classes = data.image_size, data.in_chans, data.num_classes
    spec = MODELS.get(cfg.model.name)
    base = create_model(cfg.model, classes, chans, size)
    x, y = torch.randn(cfg.unlearn.batch_size, chans, size, size), torch.randint(0, classes, (cfg.unlearn.batch_size,))
    depth = arch_of(cfg.model).get("depth")
    lora_names = select_layers(base, spec.family, cfg.lora.targets, "lora", depth)
    pattern = "^(?:" + "|".join(re.escape(n) for n in lora_names) + ")$"
    pruned = copy.deepcopy(base)
    prune_l2_structured(pruned, select_layers(pruned, spec.family, cfg.pruning.targets, "prune", depth), cfg.pruning.amount)
    variants = {
        "finetune": copy.deepcopy(base).train(),
        "lora": add_lora(copy.deepcopy(base), pattern, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, ["head"], 0).train(),
        "prunelora": add_lora(pruned, pattern, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, ["head"], 0).train(),
    }
    steps_fns = {k: step_fn(m, x, y) for k, m in variants.items()}
    flops = {k: step_flops(s) for k, s in steps_fns.items()}
    best = {k: float("inf") for k in variants}
    for _ in range(reps):
        for k, s in steps_fns.items():
            best[k] = min(best[k], time_steps(s, steps))
    peak = matmul_gflops()
    print(f"matmul fp32 (1024^2): {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    print(f"training step, {cfg.model.name}, batch {len(x)}, {size}x{size} (best of {reps} x {steps} steps):")
    for k in variants:
        rate = flops[k] / best[k] / 1e9
        print(
            f"  {k:<10} {best[k] * 1e3:7.1f} ms/step  {len(x) / best[k]:7.0f} img/s  {rate:6.1f} GFLOP/s "
            f"({100 * rate / peak:4.1f}% of matmul)  x finetune time: {best[k] / best['finetune']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true", help="only the loop benchmark, not the full comparison")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = resolve_config(load_config(None, args.overrides))
    set_threads(cfg.threads)
    loop_benchmark(cfg)
    if args.skip_run:
        return
    start = time.perf_counter()
    results = run(cfg, None, progress=False, log=lambda *_: None)
    print(f"\nfull comparison: {time.perf_counter() - start:.1f} s wall (data, training, every method, evaluation)")
    ft = next(r["metrics"] for r in results["runs"] if r["method"] == "finetune")
    print(f"{'method':<16}{'time s':>8}{'s/epoch':>9}{'x retrain':>10}{'x finetune/epoch':>17}{'peak MB':>9}")
    for r in results["runs"]:
        m = r["metrics"]
        ratio = m["time_vs_retrain"]
        print(
            f"{r['method']:<16}{m['time_s']:8.1f}{m['time_per_epoch_s']:9.2f}"
            f"{'-' if ratio is None else f'{ratio:.2f}':>10}{m['time_per_epoch_s'] / ft['time_per_epoch_s']:17.2f}"
            f"{m['peak_memory_mb']:9.1f}"
        )
    print(f"memory: {results['environment']['memory_measure']}; device {results['environment']['device_name']}")


if __name__ == "__main__":
    main()

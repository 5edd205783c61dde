"""Speed figures of the main job on this machine.

Prints (1) this machine's fp32 matmul rate, (2) the training loop's throughput for the default model
(images/s and achieved GFLOP/s, counted with torch.utils.flop_counter, as a share of the matmul rate),
fine-tuning vs LoRA vs PruneLoRA steps, interleaved and repeated so that noise hits all alike, under each
`--setups` (eager fp32; channels-last; torch.compile; bf16 autocast where the CPU has native bf16), and (3) the
default comparison's per-method time (the loop's seconds per epoch and the one-off seconds) and peak memory (one
full `prunelora run`).

    python benchmarks/throughput.py [--skip-run] [--setups eager channels_last compile] [--isa avx2] [--json PATH]
        [KEY=VALUE ...]

`--isa avx2` runs it as an AVX2-only CPU would: oneDNN, MKL and PyTorch's own kernels kept to AVX2 (`cap_isa`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from prunelora.config import load_config
from prunelora.data import load_dataset
from prunelora.engine.context import native_bf16, set_threads
from prunelora.models import MODELS, arch_of, create_model, select_layers
from prunelora.models.adapters import add_lora
from prunelora.models.pruning import prune_l2_structured
from prunelora.models.small_maps import use_small_map_convs
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.run import run


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


# beside the plain fp32 eager step (contiguous, Adam's loop over tensors); channels_last+fused is the default's
SETUPS = ("eager", "channels_last", "fused", "channels_last+fused", "channels_last+fused+small_maps", "compile", "bf16",
          "channels_last+bf16")
# environment variables that keep oneDNN (convolutions), MKL (matmul) and ATen's vectorised kernels to an
# instruction set: what a CPU without the wider ones runs
ISA_CAPS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def cap_isa(isa: str | None, script: str, argv: list[str]) -> None:
    """Run `script` with `argv` again in a fresh Python whose kernels are kept to `isa` (see ISA_CAPS), unless it is
    already so kept or no `isa` is asked; the variables must be set before PyTorch loads, hence the new process."""
    if not isa:
        return
    caps = ISA_CAPS[isa]
    if all(os.environ.get(k) == v for k, v in caps.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, script, *argv], {**os.environ, **caps})


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), default=None,
                        help="keep the kernels to this instruction set (as a CPU without wider ones runs them)")


def step_fn(model, x, y, setup: str = "eager"):
    """One training step (forward, cross-entropy, backward, Adam) of `model` on (x, y) under `setup`: eager fp32,
    channels-last activations, Adam's fused kernel, convolutions over small maps as matrix products (the CPU
    default since 2026-12-08), torch.compile'd forward, or bf16 autocast of the forward."""
    parts = setup.split("+")
    if "small_maps" in parts:
        model = use_small_map_convs(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3, fused="fused" in parts or None)
    if "channels_last" in parts:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if "compile" in parts else model
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in parts else contextlib.nullcontext

    def step():
        with cast():
            logits = forward(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
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


def default_models(cfg) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """({finetune, lora, prunelora: the default model as each trains it}, a batch of inputs, its labels)."""
    data = load_dataset(cfg.data)
    size, chans, classes = data.image_size, data.in_chans, data.num_classes
    spec = MODELS.get(cfg.model.name)
    torch.manual_seed(0)
    base = create_model(cfg.model, classes, chans, size)
    x, y = torch.randn(cfg.unlearn.batch_size, chans, size, size), torch.randint(0, classes, (cfg.unlearn.batch_size,))
    depth = arch_of(cfg.model).get("depth")
    lora_names = select_layers(base, spec.family, cfg.lora.targets, "lora", depth)
    pattern = "^(?:" + "|".join(re.escape(n) for n in lora_names) + ")$"
    pruned = copy.deepcopy(base)
    prune_l2_structured(pruned, select_layers(pruned, spec.family, cfg.pruning.targets, "prune", depth), cfg.pruning.amount)
    return {
        "finetune": copy.deepcopy(base).train(),
        "lora": add_lora(copy.deepcopy(base), pattern, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, ["head"], 0).train(),
        "prunelora": add_lora(pruned, pattern, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, ["head"], 0).train(),
    }, x, y


def loop_benchmark(cfg, reps: int = 3, steps: int = 10, setups: tuple[str, ...] = ("eager",)) -> dict:
    """Each method's training step under each setup, taken in turn `reps` times (`steps` steps each, best kept):
    ms/step, images/s, GFLOP/s (the eager step's FLOPs) and its share of the matmul rate; returns the figures."""
    models, x, y = default_models(cfg)
    setups = tuple(s for s in setups if "bf16" not in s or native_bf16())
    fns, first = {}, {}
    for name, model in models.items():
        for setup in setups:
            fns[name, setup] = step_fn(copy.deepcopy(model), x.clone(), y, setup)
            start = time.perf_counter()
            fns[name, setup]()  # the first step: kernels built, a compiled graph traced
            first[name, setup] = time.perf_counter() - start
    flops = {name: step_flops(step_fn(copy.deepcopy(m), x, y)) for name, m in models.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for key, fn in fns.items():
            best[key] = min(best[key], time_steps(fn, steps))
    peak = matmul_gflops()
    print(f"matmul fp32 (1024^2): {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads, "
          f"kernels up to {torch.backends.cpu.get_cpu_capability()}"
          + ("" if native_bf16() else "; no native bf16 on this CPU: bf16 autocast not measured"))
    print(f"training step, {cfg.model.name}, batch {len(x)}, {x.shape[-1]}x{x.shape[-1]} (best of {reps} x {steps} steps):")
    rows = []
    for (name, setup), seconds in best.items():
        rate = flops[name] / seconds / 1e9
        rows.append({"method": name, "setup": setup, "ms_per_step": 1e3 * seconds, "images_per_s": len(x) / seconds,
                     "gflop_per_step": flops[name] / 1e9, "gflops": rate, "share_of_matmul": rate / peak,
                     "first_step_s": first[name, setup]})
        print(f"  {name:<10} {setup:<13} {seconds * 1e3:7.1f} ms/step  {len(x) / seconds:7.0f} img/s  "
              f"{flops[name] / 1e9:5.1f} GFLOP  {rate:6.1f} GFLOP/s ({100 * rate / peak:4.1f}% of matmul)  "
              f"x finetune {setups[0]}: {seconds / best['finetune', setups[0]]:.2f}  first step {first[name, setup]:.1f} s")
    return {"matmul_gflops": peak, "threads": torch.get_num_threads(), "isa": torch.backends.cpu.get_cpu_capability(),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_isa_argument(parser)
    parser.add_argument("--skip-run", action="store_true", help="only the loop benchmark, not the full comparison")
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=["eager"],
                        help="step set-ups to compare (bf16 only where the CPU has it natively)")
    parser.add_argument("--json", default=None, help="write the loop figures here, as JSON")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cap_isa(args.isa, __file__, sys.argv[1:])
    cfg = resolve_config(load_config(None, args.overrides))
    set_threads(cfg.threads)
    figures = loop_benchmark(cfg, setups=tuple(args.setups))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if args.skip_run:
        return
    start = time.perf_counter()
    results = run(cfg, None, progress=False, log=lambda *_: None)
    print(f"\nfull comparison: {time.perf_counter() - start:.1f} s wall (data, training, every method, evaluation)")
    ft = next(r["metrics"] for r in results["runs"] if r["method"] == "finetune")
    print(f"{'method':<16}{'time s':>8}{'loop s/epoch':>13}{'one-off s':>10}{'x retrain':>10}{'x finetune/epoch':>17}"
          f"{'peak MB':>9}")
    for r in results["runs"]:
        m = r["metrics"]
        ratio = m["time_vs_retrain"]
        print(
            f"{r['method']:<16}{m['time_s']:8.1f}{m['loop_s_per_epoch']:13.2f}{m['one_off_s']:10.1f}"
            f"{'-' if ratio is None else f'{ratio:.2f}':>10}{m['loop_s_per_epoch'] / ft['loop_s_per_epoch']:17.2f}"
            f"{m['peak_memory_mb']:9.1f}"
        )
    print(f"memory: {results['environment']['memory_measure']}; device {results['environment']['device_name']}")


if __name__ == "__main__":
    main()

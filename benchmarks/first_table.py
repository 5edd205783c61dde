"""The first table a new user sees (`make demo`: `prunelora run` on the default, from an empty model cache) against
its compute floor, on this machine, with every part of its time.

1. this machine's fp32 matmul rate on `--threads` threads (1024x1024, best of 3), right before and after the run;
2. the floor: the default's optimizer steps (the original's, retrain's and each method's epochs over their sets at
   batch 128) x the FLOPs of one Fine-tune step at batch 128 (torch.utils.flop_counter), at that rate;
3. `prunelora run --out DIR -q` in this process, from an empty model cache, timed from the first import to the
   printed table, split into: start-up (imports, data), each training (the loop's seconds per epoch and the
   one-off seconds apart), each metric over all models (forward passes, each MIA attack, probe, relearning,
   divergence), writing the reports, and the rest;
4. the verdicts: wall <= 1.3 x floor, evaluation <= 15% of the run.

    python benchmarks/first_table.py [--threads 2] [--isa avx2] [--json PATH] [KEY=VALUE ...]

`--isa avx2` measures it as an AVX2-only CPU would run it (oneDNN, MKL and PyTorch's kernels kept to AVX2, the
floor's matmul included), on a CPU that has more.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before any import: the run's wall counts Python's start-up as `make demo`'s does

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from text_run import breakdown, matmul_rate  # each training's seconds, loop s/epoch and one-off s; GFLOP/s
from throughput import add_isa_argument, cap_isa

from prunelora import cli
from prunelora.config import load_config
from prunelora.data import load_dataset
from prunelora.engine.loop import steps_per_epoch
from prunelora.metrics import evidence, mia, scoring
from prunelora.models import create_model
from prunelora.store.environment import cpu_name
from prunelora.workflows import experiment
from prunelora.workflows import run as run_module

FLOOR_FACTOR = 1.3  # the target: wall <= 1.3 x the floor
EVAL_SHARE = 0.15  # the target: evaluation <= 15% of the wall


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for everything (make demo uses every core)")
    parser.add_argument("--json", default="docs/first_table.json", help="where the figures go, as JSON ('' for none)")
    add_isa_argument(parser)
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be positive")
    return args


class Timers:
    """Seconds and calls per label, gathered by wrapping module functions (`patch`)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, fn, label: str):
        """`fn`, timed under `label`."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        return timed

    def patch(self, module, name: str, label: str) -> None:
        setattr(module, name, self.wrap(getattr(module, name), label))


def instrument(timers: Timers) -> None:
    """Time each part of the run where it is called (module attributes, resolved at call time)."""
    timers.patch(experiment, "load_dataset", "loading the data")
    timers.patch(scoring, "outputs", "forward passes (train + test logits)")
    timers.patch(mia, "attack_efficacy", "MIA attacks (SVC: confidence, entropy, m-entropy; log. reg.: loss)")
    timers.patch(mia, "authors_efficacy", "MIA, the authors' variant (log. reg.)")
    for name in ("probe_metric", "relearn_metric", "divergence_metric", "attack_metric"):
        timers.patch(evidence, name, name.removesuffix("_metric"))
    timers.patch(run_module, "write_results", "writing results and reports")


EVALUATION = ("forward", "MIA", "probe", "relearn", "divergence", "attack")  # the parts that are evaluation


def step_flops(cfg) -> int:
    """FLOPs of one Fine-tune step (forward, backward, Adam) of the default model at the unlearning batch size."""
    data = load_dataset(cfg.data)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size).train()
    x = torch.randn(cfg.unlearn.batch_size, data.in_chans, data.image_size, data.image_size)
    y = torch.randint(0, data.num_classes, (cfg.unlearn.batch_size,))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return counter.get_total_flops()


def default_steps(results: dict) -> dict[str, int]:
    """Optimizer steps of each training of the run (epochs x batches over its set), from its sizes and config."""
    cfg, sizes = results["config"], results["data"]["sizes"]
    retain, train = sizes["retain"], sizes["retain"] + sizes["forget"]
    steps = {"original": cfg["train"]["epochs"] * steps_per_epoch(train, cfg["train"]["batch_size"]),
             "retrain": cfg["train"]["epochs"] * steps_per_epoch(retain, cfg["train"]["batch_size"])}
    for method in cfg["methods"]:
        if method != "retrain":
            steps[method] = cfg["unlearn"]["epochs"] * steps_per_epoch(retain, cfg["unlearn"]["batch_size"])
    return steps


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cap_isa(args.isa, __file__, sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRUNELORA_CACHE"] = str(Path(tmp) / "cache")  # an empty model cache, as on a new machine
        torch.set_num_threads(args.threads)
        imports = time.perf_counter() - START  # seconds: Python, PyTorch and prunelora's start-up
        before = matmul_rate()  # GFLOP/s
        timers = Timers()
        instrument(timers)
        out = Path(tmp) / "run"
        run_start = time.perf_counter()
        with contextlib.suppress(SystemExit):
            cli.main(["run", "--out", str(out), "-q", f"threads={args.threads}", *args.overrides])
        wall = time.perf_counter() - run_start  # seconds: the run, from the command line to the printed table
        results = json.loads((out / "results.json").read_text())
    after = matmul_rate()
    flops = step_flops(load_config(overrides=args.overrides))
    record = summarise(results, timers, wall, imports, before, after, flops)
    record["environment"] = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
                             "isa": torch.backends.cpu.get_cpu_capability(), "isa_cap": args.isa,
                             "date": time.strftime("%Y-%m-%d"), "overrides": args.overrides}
    print(summary(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nfigures: {args.json}")


def summarise(results: dict, timers: Timers, run_s: float, start_up_s: float, before: float, after: float,
              flops: int) -> dict:
    """The record: the floor, each training's and each metric's seconds, the rest, the verdicts. `run_s`: the run
    from the command line to the printed table; `start_up_s`: the imports before it (seconds); `before`, `after`:
    the matmul rates (GFLOP/s); `flops`: one Fine-tune step's."""
    steps = default_steps(results)
    rate = (before + after) / 2  # GFLOP/s around the run
    floor = sum(steps.values()) * flops / (rate * 1e9)  # seconds
    parts = breakdown(results, run_s)
    trainings = [{**row, "part": r["method"], "steps": steps.get(r["method"], 0)}
                 for row, r in zip(parts["rows"], results["runs"])]
    training = parts["steps_s"]
    metrics = [{"part": k, "seconds": v, "calls": timers.calls[k]} for k, v in timers.seconds.items()]
    wall = run_s + start_up_s
    evaluation = sum(m["seconds"] for m in metrics if m["part"].startswith(EVALUATION))
    return {"matmul_gflops": {"before": before, "after": after}, "step_gflop": flops / 1e9,
            "steps": sum(steps.values()), "floor_s": floor, "wall_s": wall, "trainings": trainings,
            "training_s": training, "metrics": metrics, "evaluation_s": evaluation,
            "start_up_s": start_up_s, "rest_s": run_s - training - sum(m["seconds"] for m in metrics),
            "wall_vs_floor": wall / floor, "evaluation_share": evaluation / wall}


def summary(record: dict) -> str:
    """The breakdown as markdown, with both verdicts."""
    r = record
    lines = ["| part | steps | s | loop s/epoch | one-off s |", "|---|---:|---:|---:|---:|"]
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    lines.append(f"| start-up (Python, PyTorch, prunelora) | | {r['start_up_s']:.1f} | | |")
    for t in r["trainings"]:
        lines.append(f"| training: {t['part']}{' (failed)' if t['error'] else ''} | {t['steps']} | {t['time_s']:.1f} "
                     f"| {fmt(t['loop_s_per_epoch'])} | {fmt(t['one_off_s'], 1)} |")
    for m in r["metrics"]:
        lines.append(f"| {m['part']} ({m['calls']} calls) | | {m['seconds']:.1f} | | |")
    lines += [f"| the rest (splits, copies of the model, pruning checks, the printed table) | | {r['rest_s']:.1f} | | |",
              f"| **the run** | **{r['steps']}** | **{r['wall_s']:.1f}** | | |", ""]
    rates = r["matmul_gflops"]
    verdict = lambda ok: "PASS" if ok else "MISS"
    lines += [(f"floor: {r['steps']} steps x {r['step_gflop']:.1f} GFLOP / {sum(rates.values()) / 2:.1f} GFLOP/s "
               f"(matmul before {rates['before']:.1f}, after {rates['after']:.1f}) = {r['floor_s']:.1f} s"),
              (f"wall / floor: **{r['wall_vs_floor']:.2f}x** (target <= {FLOOR_FACTOR}): "
               f"{verdict(r['wall_vs_floor'] <= FLOOR_FACTOR)}"),
              (f"evaluation: {r['evaluation_s']:.1f} s = **{100 * r['evaluation_share']:.1f}%** of the run "
               f"(target <= {100 * EVAL_SHARE:.0f}%): {verdict(r['evaluation_share'] <= EVAL_SHARE)}")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

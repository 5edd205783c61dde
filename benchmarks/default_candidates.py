"""Candidate set-ups for the embedded default: how hard 50% pruning hits each one, and what PruneLoRA makes of it.

For every seed it prints the original's test accuracy, the accuracy right after PruneLoRA's pruning (before any
training; BatchNorm statistics as the original left them, and recomputed over the retain set), then UA, MIA, RA,
TA and time of retrain, LoRA and PruneLoRA (the same `prunelora run` the README's demo does, with the given
overrides). Use it to judge whether a data set is in the paper's regime: pruning that really damages the
network, and forgetting that does not depend on the seed.

    python benchmarks/default_candidates.py --seeds 0,1,2,3,4 data.name=animal-mnist data.image_size=8
"""

from __future__ import annotations

import argparse
import copy
import time

from prunelora.config import load_config
from prunelora.engine.loop import recalibrate_bn
from prunelora.methods import UnlearnTask, method_task
from prunelora.metrics.evaluate import outputs, quality
from prunelora.workflows.experiment import make_context, prepare, resolve_config, train_original
from prunelora.workflows.run import run


def after_pruning(cfg, data, splits, ctx) -> dict:
    """RA, TA and forget accuracy of the original right after PruneLoRA's pruning, without and with BatchNorm
    statistics recomputed over the retain set."""
    original, _ = train_original(cfg, data, ctx)
    _, task = method_task(UnlearnTask(data, splits, cfg), "prunelora")
    pruned = copy.deepcopy(original)
    task.prune(pruned)
    raw = quality(*outputs(pruned, data, ctx), data, splits, cfg.seed)
    recalibrate_bn(pruned, data, splits.retain, ctx)
    refit = quality(*outputs(pruned, data, ctx), data, splits, cfg.seed)
    return {"raw": raw, "bn": refit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2,3,4")
    parser.add_argument("--methods", default="retrain,lora,prunelora")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for seed in [int(s) for s in args.seeds.split(",")]:
        overrides = [*args.overrides, f"seed={seed}", f"methods=[{args.methods}]", "eval.evidence=[]", "eval.curves=false"]
        cfg = resolve_config(load_config(None, overrides))
        ctx = make_context(cfg, progress=False)
        data, splits = prepare(cfg, ctx.device)
        start = time.perf_counter()
        pruned = after_pruning(cfg, data, splits, ctx)
        results = run(cfg, None, progress=False, log=lambda *_: None)
        wall = time.perf_counter() - start
        orig = next(r["metrics"] for r in results["runs"] if r["method"] == "original")
        line = (f"seed {seed}: original TA {orig['TA']:.2f} forget-TA {orig['forget_TA']:.2f} | after pruning "
                f"RA {pruned['raw']['RA']:.1f} TA {pruned['raw']['TA']:.1f} forget {100 - pruned['raw']['UA']:.1f}"
                f" (BN refit: RA {pruned['bn']['RA']:.1f} forget {100 - pruned['bn']['UA']:.1f}) | {wall:.0f} s wall")
        print(line, flush=True)
        for r in results["runs"]:
            if r["method"] == "original" or "error" in r:
                continue
            m = r["metrics"]
            print(f"    {r['method']:<15} UA {m['UA']:6.2f} MIA {m['MIA']:6.2f} RA {m['RA']:6.2f} TA {m['TA']:6.2f} "
                  f"time {m['time_s']:6.1f} s ({m['time_s'] / orig['time_s']:.2f}x original)", flush=True)


if __name__ == "__main__":
    main()

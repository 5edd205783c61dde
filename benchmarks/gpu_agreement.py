"""The default comparison on the GPU with CUDA graphs and with eager steps, over several seeds: do they agree?

Each (path, seed) pair is one `prunelora run` process (evidence metrics off: UA, MIA, RA, TA only), all started at
once on the one GPU, each with its own model cache. Prints, per method, the mean and standard deviation over
seeds of UA, MIA, RA and TA for each path, and the per-seed difference graphs - eager, beside the seed-to-seed
spread that bounds what "the same result" can mean.

    python benchmarks/gpu_agreement.py --seeds 0,1,2,3,4 --json agreement.json [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prunelora.store.files import atomic_write

METRICS = ("UA", "MIA", "RA", "TA", "time_s")
PATHS = {"graphs": "true", "eager": "false"}


def launch(path: str, seed: int, work: Path, extra: list[str], device: str) -> subprocess.Popen:
    out = work / f"{path}-{seed}"
    env = dict(os.environ, PRUNELORA_CACHE=str(work / f"cache-{path}-{seed}"))
    cmd = [sys.executable, "-m", "prunelora", "run", "--quiet", "--out", str(out), f"seed={seed}", f"device={device}",
           "threads=1", "eval.evidence=[]", f"cuda_graphs={PATHS[path]}", *extra]
    return subprocess.Popen(cmd, env=env, stdout=open(work / f"{path}-{seed}.log", "w"), stderr=subprocess.STDOUT)


def read(work: Path, path: str, seed: int) -> dict[str, dict[str, float]]:
    """{method: {metric: value}} of one finished run."""
    results = json.loads((work / f"{path}-{seed}" / "results.json").read_text())
    return {r["method"]: {k: r["metrics"][k] for k in METRICS if r["metrics"].get(k) is not None}
            for r in results["runs"] if "error" not in r}


def summarise(values: dict, seeds: list[int]) -> dict:
    """Per method and metric: each path's mean, std and per-seed values, and the graphs - eager differences."""
    out = {}
    for method in values["eager"][seeds[0]]:
        out[method] = {}
        for metric in METRICS:
            per = {p: [values[p][s].get(method, {}).get(metric, np.nan) for s in seeds] for p in PATHS}
            diff = np.subtract(per["graphs"], per["eager"])
            out[method][metric] = {
                **{p: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "seeds": v}
                   for p, v in per.items()},
                "difference": {"mean": float(np.mean(diff)), "max_abs": float(np.max(np.abs(diff)))},
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--json")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the script (no graphs there)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="agreement-"))
    start = time.perf_counter()
    procs = {(p, s): launch(p, s, work, args.overrides, args.device) for p in PATHS for s in seeds}
    codes = {key: proc.wait() for key, proc in procs.items()}
    wall = time.perf_counter() - start
    failed = [key for key, code in codes.items() if code != 0]
    for path, seed in failed:
        print(f"{path} seed {seed} failed:\n" + (work / f"{path}-{seed}.log").read_text()[-3000:])
    if failed:
        sys.exit(1)
    values = {p: {s: read(work, p, s) for s in seeds} for p in PATHS}
    summary = summarise(values, seeds)
    print(f"{len(procs)} runs at once, {wall:.0f} s wall; seeds {seeds}; mean ± std over seeds, then graphs - eager")
    for method, metrics in summary.items():
        cells = [f"{m} {v['graphs']['mean']:6.2f}±{v['graphs']['std']:5.2f} / {v['eager']['mean']:6.2f}"
                 f"±{v['eager']['std']:5.2f} ({v['difference']['mean']:+.2f})" for m, v in metrics.items()]
        print(f"  {method:15}" + "   ".join(cells))
    if args.json:
        atomic_write(args.json, json.dumps({"seeds": seeds, "overrides": args.overrides, "wall_s": wall,
                                            "summary": summary}, indent=2))


if __name__ == "__main__":
    main()

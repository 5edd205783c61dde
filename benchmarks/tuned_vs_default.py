"""Tuned against default recipes (docs/results.md): `prunelora tune` each listed baseline on the validation split,
then one `prunelora run` with every baseline at its default recipe beside its tuned recipe (a variant named
<method>_tuned), over the given seeds, with retrain as the reference.

    python benchmarks/tuned_vs_default.py --out runs/tuned --seeds 0 1 2 3 4 \
        --tune grad_ascent:15 ssd:10:0,1,2 random_labels:6 scrub:6 threads=1

Each --tune entry is METHOD:TRIALS[:SEEDS TUNED OVER] (default: seed 0). Extra KEY=VALUE overrides go to both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml


def prunelora(*argv: str, check: bool = True) -> None:
    print("+ prunelora " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "prunelora", *argv], check=check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tuned")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--tune", nargs="+", required=True, metavar="METHOD:TRIALS[:SEEDS]")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    # KEY=VALUE after the --tune entries land in --tune: move them to the overrides
    args.overrides += [e for e in args.tune if "=" in e]
    args.tune = [e for e in args.tune if "=" not in e]
    out = Path(args.out)
    variants = []
    for entry in args.tune:
        method, trials, *seeds = entry.split(":")
        tuned = out / f"tune-{method}"
        seed_args = [f"seeds=[{seeds[0]}]"] if seeds else []
        prunelora("tune", "--method", method, "--trials", trials, "--out", str(tuned), "-q", *seed_args, *args.overrides)
        best = yaml.safe_load((tuned / "best.yaml").read_text())["hparams"][method]
        name = f"{method}_tuned"
        variants += [f"variants.{name}.method={method}"]
        variants += [f"variants.{name}.hparams.{method}.{k}={v}" for k, v in best.items() if v is not None]
    methods = ["retrain"] + [e.split(":")[0] for e in args.tune] + [f"{e.split(':')[0]}_tuned" for e in args.tune]
    seeds = ",".join(str(s) for s in args.seeds)
    prunelora("run", "--out", str(out / "compare"), "-q", f"methods=[{','.join(methods)}]", f"seeds=[{seeds}]",
              *variants, *args.overrides, check=False)  # a default recipe that diverges is reported, not fatal


if __name__ == "__main__":
    main()

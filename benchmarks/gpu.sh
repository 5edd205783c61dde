#!/usr/bin/env bash
# GPU speed and memory of every paper method on CIFAR-shaped random data (about 5 minutes on one H100), then the
# default comparison on the GPU (about 40 s). docs/gpu.md holds the figures.
# Usage: benchmarks/gpu.sh [KEY=VALUE ...]   (PYTHON=path/to/python to choose the interpreter; OUT=dir for the run,
# default runs/gpu-demo; the benchmark's figures also go to $OUT.json with versions and device)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-runs/gpu-demo}"
"$PY" benchmarks/gpu.py --json "$OUT.json" "$@"
"$PY" -m prunelora run --quiet --out "$OUT" device=cuda

#!/usr/bin/env bash
# GPU speed and memory of every paper method on CIFAR-shaped random data; fits in 8 minutes on one H100.
# Usage: benchmarks/gpu.sh [KEY=VALUE ...]   (PYTHON=path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PY" benchmarks/gpu.py "$@"

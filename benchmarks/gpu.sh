#!/usr/bin/env bash
# Every GPU figure of docs/gpu.md in one run, collected in DIR/gpu.json (rewritten after every step, so a run
# that is stopped keeps what it measured). Steps 1 to 4 took about 6 minutes on one H200, estimated from their
# parts; 6 and 7 are new and unmeasured (7 compiles ResNet-50 twice).
#   1. graphs    CUDA-graph training against eager, parameter by parameter (benchmarks/gpu_graphs.py)
#   2. speed     speed and peak memory of every paper method, ResNet-50 and ViT, default path, with a profile
#   3. eager     the same for Fine-tune and PruneLoRA with eager steps (cuda_graphs=false), with a profile
#   4. agreement the default comparison over five seeds, graphs against eager (benchmarks/gpu_agreement.py)
#   5. nccl      with two or more GPUs: the default with 2 processes (torchrun, NCCL) against one process
#   6. autotune  Fine-tune and PruneLoRA on ResNet-50 with cuDNN's autotuner (cudnn.benchmark)
#   7. compile   Fine-tune and PruneLoRA on ResNet-50 with compile=true (eager steps: graphs exclude compile)
# A step that fails is reported and the next one runs; the exit status says whether all passed.
# Usage: benchmarks/gpu.sh [DIR]   (default DIR runs/gpu; PYTHON=path/to/python to choose the interpreter;
#        STEPS="speed compile" runs only those steps)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DIR="${1:-runs/gpu}"
STEPS="${STEPS:-graphs speed eager agreement nccl autotune compile}"
COMMAND="benchmarks/gpu.sh $*"
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1
status=0

collect() {  # every part measured so far, with the device and versions, into DIR/gpu.json
    "$PY" - "$DIR" "$COMMAND" <<'EOF'
import json, subprocess, sys
from pathlib import Path
import torch
from prunelora.store.environment import environment
from prunelora.store.files import atomic_write
from prunelora.engine.meter import CUDA_MEMORY_KIND
d = Path(sys.argv[1])
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
record = {"command": sys.argv[2], "nvidia_smi": smi, "environment": environment(torch.device("cuda"), CUDA_MEMORY_KIND)}
for part in ("graphs", "speed", "speed_eager", "agreement", "speed_autotune", "speed_compile"):
    f = d / f"{part}.json"
    record[part] = json.loads(f.read_text()) if f.exists() else None
atomic_write(d / "gpu.json", json.dumps(record, indent=2))
EOF
}

step() {
    local name=$1 t=$SECONDS
    shift
    case " $STEPS " in *" $name "*) ;; *) echo "== $name: not in STEPS, skipped"; return 0 ;; esac
    echo "== $name: $*"
    local rc=0
    "$@" || rc=$?
    if [ $rc -eq 0 ]; then echo "== $name: done in $((SECONDS - t)) s"; else echo "!! $name failed after $((SECONDS - t)) s"; status=1; fi
    collect
    return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
GRAPHS=true
step graphs "$PY" benchmarks/gpu_graphs.py --json "$DIR/graphs.json" || GRAPHS=false
# 12,800 images (100 steps) per epoch: the second epoch is steady state; 45,000 cost 3.5x the time for the same figure
step speed "$PY" benchmarks/gpu.py --n-train 12800 --json "$DIR/speed.json" --profile "$DIR/profile.txt" "cuda_graphs=$GRAPHS"
step eager "$PY" benchmarks/gpu.py --methods finetune,prunelora --n-train 12800 --json "$DIR/speed_eager.json" \
    --profile "$DIR/profile_eager.txt" cuda_graphs=false
step agreement "$PY" benchmarks/gpu_agreement.py --json "$DIR/agreement.json"
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -ge 2 ]; then
    step nccl "$PY" -m torch.distributed.run --nproc_per_node 2 -m prunelora run --quiet --out "$DIR/nccl" \
        eval.evidence=[] device=cuda
else
    echo "== nccl: skipped, $GPUS GPU"
fi
R50=(--models resnet50 --methods finetune,prunelora --n-train 12800)
step autotune "$PY" benchmarks/gpu.py "${R50[@]}" --cudnn-benchmark --json "$DIR/speed_autotune.json" "cuda_graphs=$GRAPHS"
step compile "$PY" benchmarks/gpu.py "${R50[@]}" --json "$DIR/speed_compile.json" compile=true
echo "wrote $DIR/gpu.json"
exit $status

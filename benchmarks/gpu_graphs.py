"""CUDA graphs against eager steps: the same training, compared parameter by parameter (needs a GPU).

From one initial model, Fine-tune (every parameter trains) and PruneLoRA (adapters and head) run eagerly and
with CUDA graphs, on CIFAR-shaped random data. Two settings:
- exact: fp32 (amp=false) with the adapters' dropout off, so a step's work is fixed: graphed and eager training
  should differ only as much as two eager runs do (cuDNN's own run-to-run differences; a second eager run);
- default: bf16 autocast, dropout 0.1; the masks of a replay come from other offsets of the random stream, so
  the figures agree in distribution, not bit for bit: the losses per epoch are printed side by side.

    python benchmarks/gpu_graphs.py --json graphs.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import setup

from prunelora.methods import UnlearnTask
from prunelora.store.files import atomic_write
from prunelora.workflows.unlearn import unlearn_one


def train(method: str, graphs: bool, extra: list[str], n_train: int) -> tuple[dict, list[float]]:
    cfg, ctx, data, splits, model = setup("resnet50-tiny", "cuda", n_train, [f"cuda_graphs={str(graphs).lower()}",
                                                                             "model.width=16", *extra], epochs=2)
    unlearned, record = unlearn_one(method, model, UnlearnTask(data, splits, cfg), ctx)
    state = {k: v.detach().float().cpu() for k, v in unlearned.state_dict().items() if v.is_floating_point()}
    return state, [h["loss"] for h in record["history"]]


def max_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over every float tensor, relative to that tensor's largest |b| (0 = identical)."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=128 * 24)
    parser.add_argument("--json")
    parser.add_argument("--exact-only", action="store_true", help="only the fp32, dropout-off comparison")
    args = parser.parse_args()
    start, record = time.perf_counter(), {}
    settings = {"exact": ["amp=false", "lora.dropout=0"], "default": []}
    if args.exact_only:
        del settings["default"]
    for setting, extra in settings.items():
        for method in ("finetune", "prunelora"):
            eager1, loss1 = train(method, False, extra, args.n_train)
            graphed, loss_g = train(method, True, extra, args.n_train)
            row = {"graphs_vs_eager": max_diff(graphed, eager1), "loss_eager": loss1, "loss_graphs": loss_g}
            if setting == "exact":  # the floor: two eager runs (cuDNN may pick algorithms that add in any order)
                eager2, row["loss_eager_again"] = train(method, False, extra, args.n_train)
                row["eager_vs_eager"] = max_diff(eager2, eager1)
            record[f"{setting}/{method}"] = row
            print(f"{setting:8}{method:11} max relative parameter difference: eager vs eager "
                  f"{row.get('eager_vs_eager', float('nan')):.2e}, graphs vs eager {row['graphs_vs_eager']:.2e}; "
                  f"loss per epoch eager {[round(v, 4) for v in loss1]}, graphs {[round(v, 4) for v in loss_g]}")
    print(f"total {time.perf_counter() - start:.0f} s on {torch.cuda.get_device_name()}")
    if args.json:
        atomic_write(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

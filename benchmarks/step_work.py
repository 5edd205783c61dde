"""The work of one training step per method: convolution FLOPs, and passes over full-size activations besides.

Counts the FLOPs of the step's convolutions and matrix products (torch.utils.flop_counter), and the ATen operators of one training step (forward, backward, Adam step) under bf16 autocast that read
or write an activation (a 4-D tensor whose first dimension is the batch), per method, and the bytes those
reads and writes move, scaled to a batch of 128. On a GPU each such operator is at least one kernel that
streams the tensors it touches; with CUDA graphs (no launch gaps) the step's time is the sum of its kernels,
so these passes are what LoRA adds to Fine-tune besides the adapters' small convolutions. The step is built as
the methods build it (the configured pruning, LoRA targets, rank, alpha and dropout; the head trains), and the
adapters draw their dropout masks as on a GPU (`torch.native_dropout`), so the counts are the GPU's, found on
any machine. The operators are the ones PyTorch dispatches (one kernel each for these element-wise ones).

    python benchmarks/step_work.py                         # the paper's ResNet-50, 32x32 images
    python benchmarks/step_work.py --model resnet50-tiny   # the same operators, faster
    python benchmarks/step_work.py --json work.json
"""

from __future__ import annotations

import argparse
import copy
import json
from collections import Counter
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from prunelora.config import load_config
from prunelora.methods import UnlearnTask
from prunelora.methods.prunelora import add_task_lora
from prunelora.models import create_model
from prunelora.models.adapters import FastDropout
from prunelora.store.environment import environment
from prunelora.store.files import atomic_write
from prunelora.workflows.experiment import resolve_config

CONVOLUTION = ("convolution", "convolution_backward")
SCALE_TO = 128  # bytes are reported for this batch size


class ActivationOps(TorchDispatchMode):
    """Counts, per operator, the calls that touch a batch-first 4-D tensor, and the bytes of those tensors."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.calls, self.bytes = batch, Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        touched = [t for t in tree_flatten((args, kwargs, out))[0]
                   if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] == self.batch]
        if touched:
            name = func.overloadpacket.__name__
            self.calls[name] += 1
            self.bytes[name] += sum(t.numel() * t.element_size() for t in touched)
        return out


def build(cfg, method: str, classes: int, chans: int, size: int) -> torch.nn.Module:
    """The model as `method` sets it up: all parameters (finetune), or pruned by the method's own code (channels
    zeroed; removed for prunelora_remove) and adapted, with the head training unless it has an adapter."""
    model = create_model(cfg.model, classes, chans, size)
    if method == "finetune":
        return model.train()
    if method == "prunelora_remove":
        cfg.pruning.mode = "remove"
    task = UnlearnTask(SimpleNamespace(in_chans=chans, image_size=size), None, cfg)
    if method.startswith("prunelora"):
        task.prune(model)
    return add_task_lora(model, task, seed=0)[0].train()


def count_step(model: torch.nn.Module, batch: int, chans: int, size: int, classes: int):
    """(FLOPs, activation operators) of one training step."""
    x, y = torch.randn(batch, chans, size, size), torch.randint(0, classes, (batch,))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    counter = ActivationOps(batch)
    with FlopCounterMode(display=False) as flops, counter:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return flops.get_total_flops(), counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=4, help="counts do not depend on it; bytes are scaled to 128")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = resolve_config(load_config(overrides=[f"model.name={args.model}", "data.name=cifar10", *args.overrides]))
    FastDropout.numpy_on_cpu = False  # the GPU's dropout operators, not the CPU's faster mask
    torch.manual_seed(0)
    figures = {}
    for method in ("finetune", "lora", "prunelora", "prunelora_remove"):
        flops, counter = count_step(build(copy.deepcopy(cfg), method, 10, 3, 32), args.batch, 3, 32, 10)
        other = {k: v for k, v in counter.calls.items() if k not in CONVOLUTION}
        scale = SCALE_TO / args.batch / 2**20
        moved = sum(b for k, b in counter.bytes.items() if k not in CONVOLUTION) * scale
        figures[method] = {"gflop_at_128": flops * SCALE_TO / args.batch / 1e9, "convolution_calls": sum(counter.calls[k] for k in CONVOLUTION),
                           "convolution_mb_at_128": sum(counter.bytes[k] for k in CONVOLUTION) * scale,
                           "other_calls": sum(other.values()), "other_mb_at_128": moved,
                           "by_operator": dict(sorted(other.items(), key=lambda kv: -kv[1]))}
    print(f"{args.model}, one training step under bf16 autocast: FLOPs, and the operators touching an activation "
          f"(GFLOP and MB scaled to batch {SCALE_TO}):")
    print(f"  {'method':<17}{'GFLOP':>8}{'convolutions':>13}{'conv MB':>9}{'other ops':>10}{'other MB':>10}")
    for method, f in figures.items():
        print(f"  {method:<17}{f['gflop_at_128']:>8.0f}{f['convolution_calls']:>13}{f['convolution_mb_at_128']:>9.0f}"
              f"{f['other_calls']:>10}{f['other_mb_at_128']:>10.0f}")
    ft, pl = figures["finetune"]["by_operator"], figures["prunelora"]["by_operator"]
    extra = {k: pl.get(k, 0) - ft.get(k, 0) for k in sorted(set(ft) | set(pl))}
    print("  prunelora - finetune, by operator: " + ", ".join(f"{k} {v:+d}" for k, v in extra.items() if v))
    if args.json:
        record = {"command": "python benchmarks/step_work.py " + " ".join(
            [f"--model {args.model}", f"--batch {args.batch}", *args.overrides]),
            "environment": environment(torch.device("cpu"), "not measured"), "figures": figures}
        atomic_write(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

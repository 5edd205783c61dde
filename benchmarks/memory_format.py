"""Training-step time of Fine-tune and LoRA steps on the CPU, contiguous against channels-last.

The four set-ups (Fine-tune or LoRA on the block convolutions, each in both memory formats) step in turn in one
process, so that the machine's drift hits all alike. The default model and batch (resnet18-tiny, 128 of 12x12).

    python benchmarks/memory_format.py [--steps 15] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import re
import time

import torch
from torch import nn

from prunelora.config import load_config
from prunelora.engine.context import set_threads
from prunelora.models import HEAD, create_model, select_layers
from prunelora.models.adapters import add_lora
from prunelora.workflows.experiment import resolve_config


def build(cfg, lora: bool, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(cfg.model, 10, 1, cfg.data.image_size)
    if lora:
        names = [n for n in select_layers(model, "resnet", cfg.lora.targets, "lora") if n != HEAD]
        pattern = "^(?:" + "|".join(map(re.escape, names)) + ")$"
        model = add_lora(model, pattern, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, [HEAD], 0)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    model.train()

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = resolve_config(load_config(overrides=args.overrides))
    threads = set_threads(cfg.threads)
    size = cfg.data.image_size or 12
    x = torch.randn(cfg.unlearn.batch_size, 1, size, size)
    y = torch.randint(0, 10, (cfg.unlearn.batch_size,))
    steps = {}
    for lora in (False, True):
        for cl in (False, True):
            xin = x.contiguous(memory_format=torch.channels_last) if cl else x
            steps[("lora" if lora else "finetune", cl)] = stepper(build(cfg, lora, cl), xin, y)
    for step in steps.values():
        step()  # warm-up: first use of each shape builds its kernels
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(args.steps):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[key] += time.perf_counter() - start
    print(f"{cfg.model.name}, batch {len(x)} of {size}x{size}, {threads} threads, {args.steps} interleaved steps each")
    for name in ("finetune", "lora"):
        plain, cl = (seconds[(name, c)] / args.steps * 1000 for c in (False, True))
        print(f"  {name:<9} contiguous {plain:7.1f} ms   channels-last {cl:7.1f} ms   ratio {cl / plain:.2f}")


if __name__ == "__main__":
    main()

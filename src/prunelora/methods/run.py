"""Running one method: `unlearn_one` applies a method (or variant) to a copy of the original model, seeded from
(seed, method name) so that its numbers do not depend on which methods ran before it, with its time and memory
metered and, with `eval.curves`, its learning curve recorded."""

from __future__ import annotations

import copy
import dataclasses
import zlib

from torch import nn

from ..context import Context, seed_everything
from ..meter import CostMeter
from ..metrics.curves import learning_curve
from .protocol import UnlearnTask
from .variants import method_task


def method_seed(seed: int, name: str) -> int:
    """The seed method `name` runs with in an experiment of seed `seed`."""
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def unlearn_one(name: str, original: nn.Module, task: UnlearnTask, ctx: Context) -> tuple[nn.Module, dict]:
    """Run one method (or variant) on a copy of `original`; returns the unlearned model and its cost record.
    A variant is seeded like its base method, so that it differs from it only by its settings."""
    spec, task = method_task(task, name)
    bn = (task.train_recipe() if spec.uses == ("train",) else task.unlearn_recipe()).bn  # as its fit() finishes
    cfg = task.config
    monitor = learning_curve(task.data, task.splits, bn, ctx, cfg.eval.batch_size) if cfg.eval.curves else None
    ctx = dataclasses.replace(ctx, seed=method_seed(cfg.seed, spec.name), meter=CostMeter(ctx.device), monitor=monitor)
    seed_everything(ctx.seed)
    model = copy.deepcopy(original)
    with ctx.meter.measure():
        out = spec.fn(model, task, ctx)
    record = {"time_s": ctx.meter.seconds, "epochs": out.epochs, "peak_memory_mb": ctx.meter.peak_mb,
              "optimizer_state_mb": ctx.meter.optimizer_bytes / 2**20, **out.info}
    return out.model.eval(), record

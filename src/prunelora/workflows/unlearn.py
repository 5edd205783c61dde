"""Running one method: `unlearn_one` applies a method (or variant) to a copy of the original model, seeded from
(seed, method name) so that its numbers do not depend on which methods ran before it, with its time and memory
metered and, with `eval.curves`, its learning curve recorded; with `eval.select=best` and a validation split, the
epoch that scores best on it is kept."""

from __future__ import annotations

import copy
import dataclasses
import zlib

from torch import nn

from ..engine.context import Context, seed_everything
from ..engine.meter import CostMeter
from ..methods.protocol import UnlearnTask
from ..methods.variants import method_task
from ..metrics.curves import learning_curve
from .validation import BestEpoch, Validation, both


def method_seed(seed: int, name: str) -> int:
    """The seed method `name` runs with in an experiment of seed `seed`."""
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def unlearn_one(
    name: str, original: nn.Module, task: UnlearnTask, ctx: Context, validation: Validation | None = None
) -> tuple[nn.Module, dict]:
    """Run one method (or variant) on a copy of `original`; returns the unlearned model and its cost record.
    A variant is seeded like its base method, so that it differs from it only by its settings. With
    `validation` and eval.select=best, the model of the epoch that scores best there is returned (retrain, the
    reference, always runs to its end)."""
    spec, task = method_task(task, name)
    bn = (task.train_recipe() if spec.uses == ("train",) else task.unlearn_recipe()).bn  # as its fit() finishes
    cfg = task.config
    monitor = learning_curve(task.data, task.splits, bn, ctx, cfg.eval.batch_size) if cfg.eval.curves else None
    chooser = None
    if validation is not None and cfg.eval.select == "best" and spec.uses != ("train",):
        chooser = BestEpoch(validation, bn, ctx, cfg.eval.batch_size, cfg.seed)
    ctx = dataclasses.replace(ctx, seed=method_seed(cfg.seed, spec.name), meter=CostMeter(ctx.device),
                              monitor=both(monitor, chooser))
    seed_everything(ctx.seed)
    model = copy.deepcopy(original)
    with ctx.meter.measure():
        out = spec.fn(model, task, ctx)
    record = {"time_s": ctx.meter.seconds, "loop_s": ctx.meter.loop_seconds, "epochs": out.epochs,
              "peak_memory_mb": ctx.meter.peak_mb,
              "optimizer_state_mb": ctx.meter.optimizer_bytes / 2**20, **out.info}
    model = out.model
    if chooser is not None and chooser.best is not None:
        value, epoch, best = chooser.best
        record.update(selected_epoch=epoch, passes=chooser.epochs, val_objective=value)
        if epoch < chooser.epochs:  # the last pass's is the method's own model
            model = ctx.prepare_model(best)
    return model.eval(), record


def retrain_reference(validation: Validation, original: nn.Module, task: UnlearnTask, ctx: Context) -> Validation:
    """`validation` with retrain's metrics on it as the reference of the gap objective (retrain trained on the same
    train set as `task`, from the model cache when it is there); unchanged for the retrain-free objective."""
    if validation.objective != "gap":
        return validation
    model, _ = unlearn_one("retrain", original, task, ctx)
    cfg = task.config
    metrics = validation.metrics(model, dataclasses.replace(ctx, seed=cfg.seed), cfg.eval.batch_size, cfg.seed)
    return dataclasses.replace(validation, reference=metrics)

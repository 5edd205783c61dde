"""Retrain: exact unlearning, a new model trained from scratch on the retain set with the original's recipe."""

from __future__ import annotations

import time

from ..engine.loop import fit
from ..models import create_model
from ..store import cache
from .protocol import Unlearned, UnlearnTask


def retrain(model, task: UnlearnTask, ctx) -> Unlearned:
    data, cfg = task.data, task.config
    fresh = ctx.prepare_model(create_model(cfg.model, data.num_classes, data.in_chans, data.image_size))
    recipe = task.train_recipe()
    key, described = cache.model_key("retrain", cfg, ctx.seed, data.source_rows(task.splits.retain), ctx, data)
    if cfg.cache and (record := cache.load("retrain", key, fresh)) is not None:
        # with the time and memory it took when trained (no loop seconds from an entry stored before they were kept)
        return Unlearned(fresh.eval(), recipe.epochs, {"loop_s": None, **record})
    start = time.perf_counter()
    history = fit(fresh, data, task.splits.retain, recipe, ctx, desc="retrain")
    if cfg.cache:
        cost = {"time_s": time.perf_counter() - start, "loop_s": ctx.meter.loop_seconds,
                "peak_memory_mb": ctx.meter.peak_mb}
        cache.store("retrain", key, described, fresh, cost, data)
    return Unlearned(fresh, recipe.epochs, {"history": history})

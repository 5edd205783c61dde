"""Retrain: exact unlearning, a new model trained from scratch on the retain set with the original's recipe."""

from __future__ import annotations

from ..models import create_model
from . import MethodConfig, Unlearned, UnlearnTask, register_method
from ._train import fit


@register_method("retrain", "exact unlearning: train from scratch on the retain set (the original's recipe)", ("train",), MethodConfig)
def retrain(model, task: UnlearnTask, ctx) -> Unlearned:
    data = task.data
    fresh = ctx.prepare_model(create_model(task.config.model, data.num_classes, data.in_chans, data.image_size))
    recipe = task.train_recipe()
    history = fit(fresh, data, task.splits.retain, recipe, ctx, desc="retrain")
    return Unlearned(fresh, recipe.epochs, {"history": history})

"""Fine-tune: train every weight on the retain set (the paper's Adam, lr 1e-3, 5 epochs)."""

from __future__ import annotations

from ..engine.loop import fit
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def finetune_all(model, task: UnlearnTask, ctx, prune: bool) -> Unlearned:
    """Optionally prune (permanently, L2, `pruning.amount`), then fine-tune all weights on the retain set."""
    pruned = task.prune(model, ctx) if prune else {}
    unfreeze(model)
    info = {"trainable_params": trainable_parameters(model)}
    recipe = task.unlearn_recipe()
    info["history"] = fit(model, task.data, task.splits.retain, recipe, ctx, desc="finetune")
    info.update(task.pruning_info(model, pruned))  # updates to all weights write into the pruned rows
    return Unlearned(model, recipe.epochs, info)


def finetune(model, task: UnlearnTask, ctx) -> Unlearned:
    return finetune_all(model, task, ctx, prune=False)

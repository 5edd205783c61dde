"""Fine-tune: train every weight on the retain set (the paper's Adam, lr 1e-3, 5 epochs)."""

from __future__ import annotations

from ..pruning import count_zero_rows, prune_l2_structured
from . import Unlearned, UnlearnTask, register_method, trainable_parameters
from ._train import fit


def finetune_all(model, task: UnlearnTask, ctx, prune: bool) -> Unlearned:
    """Optionally prune (permanently, L2, `pruning.amount`), then fine-tune all weights on the retain set."""
    pruned = prune_l2_structured(model, task.layers(model, "prune"), task.config.pruning.amount) if prune else {}
    for p in model.parameters():
        p.requires_grad_(True)
    info = {"trainable_params": trainable_parameters(model)}
    recipe = task.unlearn_recipe()
    info["history"] = fit(model, task.data, task.splits.retain, recipe, ctx, desc="finetune")
    if pruned:
        # updates to all weights write into the pruned rows: report how many stay zero
        still, total = count_zero_rows(model, pruned)
        info.update(pruned_layers=len(pruned), pruned_rows=total, pruned_rows_still_zero=still)
    return Unlearned(model, recipe.epochs, info)


@register_method("finetune", "fine-tune all weights on the retain set")
def finetune(model, task: UnlearnTask, ctx) -> Unlearned:
    return finetune_all(model, task, ctx, prune=False)

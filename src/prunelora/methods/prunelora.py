"""PruneLoRA (Mittal, AAAI 2025 student abstract, arXiv 2411.11907).

1. Structured L2 pruning of `pruning.amount` (0.5) of the output channels / rows of the target layers,
   made permanent (ResNet: every Conv2d; ViT: the last block's attention projection and the head).
2. LoRA adapters (peft) on the pruned layers of `lora.targets` (ResNet: the convs inside the blocks,
   r=8, alpha=16; ViT: the last attention projection, r=16, alpha=32), dropout 0.1.
3. Fine-tune the adapters and the whole classifier head on the retain set (Adam, lr 1e-3, 5 epochs);
   everything else is frozen. On a Llama (text) the rule prunes and adapts the `lora.targets` projections
   (preset `paper` = the attention's q/k/v/o rows) and only the adapters train. BatchNorm follows `unlearn.bn`
   (default: recalibrated after training).
   When `lora.targets` selects the head itself (ViT `authors_code`: what the authors' ViT code trained),
   the head gets an adapter instead and its weight and bias stay frozen.
   Variants (`hparams.prunelora.forget_loss`, beyond the paper): the adapters also train against the forget set,
   by gradient difference or NPO (`forget_terms.py`); `pruning.importance=forget` prunes the rows the forget set
   uses most instead of the smallest.
4. Merge the adapters. The merged update B @ A is dense, so it writes into the pruned rows: the merged
   model is dense again, and the report says how many pruned rows stayed zero.
"""

from __future__ import annotations

import re

from ..data.catalog import is_text
from ..engine.loop import fit
from ..models import classifier_name
from ..models.adapters import add_lora, merge_lora
from .forget_terms import forget_batch, forget_objective, reference_nll
from .protocol import Unlearned, UnlearnTask, trainable_parameters


def add_task_lora(model, task: UnlearnTask, seed: int):
    """LoRA (the config's rank, alpha, dropout) on the task's `lora.targets`; returns (wrapped model, layers).

    A head among the LoRA layers gets an adapter like the rest (weight and bias frozen, as the authors' ViT
    code ran it); otherwise the whole head trains beside the adapters.
    """
    cfg = task.config
    head = classifier_name(model)
    lora_layers = task.layers(model, "lora")
    # a language model's head is its vocabulary projection, tied to the input embedding: it decides tokens, not the
    # classes a request forgets, so only the adapters train (the paper trains an image classifier's head in full)
    full = [] if head in lora_layers or is_text(task.data) else [head]
    pattern = "|".join(re.escape(name) for name in lora_layers)
    return add_lora(model, f"^(?:{pattern})$", cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, full, seed), lora_layers


def adapt(model, task: UnlearnTask, ctx, prune: bool) -> Unlearned:
    """Optionally prune, then train LoRA adapters plus the head (unless it has an adapter) on the retain set, with
    the forget term of `hparams.<method>.forget_loss` if one is set, then merge."""
    term = task.hparams.forget_loss
    # NPO's reference is the model before unlearning: scored before pruning changes it
    reference = reference_nll(model, task, ctx) if term == "npo" else None
    pruned = task.prune(model, ctx) if prune else {}
    wrapped, lora_layers = add_task_lora(model, task, ctx.seed)
    info = {"lora_layers": len(lora_layers), "trainable_params": trainable_parameters(wrapped)}
    recipe = task.unlearn_recipe()
    extra = {}
    if term != "none":  # retain batches with forget rows beside them; BatchNorm statistics from the retain set
        extra = {"objective": forget_objective(task, reference, ctx.device), "bn_index": task.splits.retain,
                 "paired": (task.splits.forget, forget_batch(task, recipe.batch_size))}
    info["history"] = fit(wrapped, task.data, task.splits.retain, recipe, ctx, desc="adapt", **extra)
    merged = merge_lora(wrapped)
    info.update(task.pruning_info(merged, pruned))
    return Unlearned(merged, recipe.epochs, info)


def prunelora(model, task: UnlearnTask, ctx) -> Unlearned:
    return adapt(model, task, ctx, prune=True)

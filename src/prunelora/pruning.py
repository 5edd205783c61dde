"""Structured L2 pruning as the paper does it: zero the output channels / rows with the smallest L2 norm.

`prune_l2_structured` uses `torch.nn.utils.prune.ln_structured(n=2, dim=0)` and makes the result permanent
right away (`prune.remove`): the weight becomes a plain parameter with zero rows. That order matters for
LoRA: while the pruning re-parametrisation (`weight_orig` * `weight_mask`) is in place, peft's merge writes
the update into a tensor that the mask recomputation then overwrites, so the update is silently dropped.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prune_l2_structured(
    model: nn.Module, names: list[str], amount: float, rows_rule: dict[str, tuple[str, list[int]]] | None = None
) -> dict[str, list[int]]:
    """Zero `amount` of the output rows of each named layer by smallest L2 norm; return the zeroed rows.

    `rows_rule` = {layer: ("keep" | "prune", rows)} overrides the norm for those rows of that layer (the
    ablation of the forgotten class's head row): the same number of rows is pruned, with `rows` excluded
    from, or put first into, the pruned set; the rest still go by smallest L2 norm.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    modules = dict(model.named_modules())
    pruned = {}
    for name in names:
        module = modules[name]
        if rows_rule and name in rows_rule:
            prune.custom_from_mask(module, "weight", _rule_mask(module.weight, amount, *rows_rule[name]))
        else:
            prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
        prune.remove(module, "weight")  # permanent: a plain weight with zero rows, no mask hook left
        pruned[name] = zero_rows(module.weight)
    return pruned


def _rule_mask(weight: torch.Tensor, amount: float, rule: str, rows: list[int]) -> torch.Tensor:
    """A 0/1 mask of `weight`'s shape that zeroes round(amount * n_rows) rows: `rows` first (rule "prune")
    or never (rule "keep"), then the others by smallest L2 norm, as ln_structured counts and orders them."""
    n = weight.shape[0]
    k = round(amount * n)
    order = torch.argsort(weight.detach().flatten(1).norm(dim=1)).tolist()
    others = [i for i in order if i not in rows]
    chosen = ([*rows] if rule == "prune" else []) + others
    mask = torch.ones_like(weight)
    mask[chosen[:k]] = 0
    return mask


def zero_rows(weight: torch.Tensor) -> list[int]:
    """Indices of the output rows / channels (dim 0) that are exactly zero."""
    norms = weight.detach().flatten(1).abs().sum(dim=1)
    return torch.nonzero(norms == 0).flatten().tolist()


def count_zero_rows(model: nn.Module, pruned: dict[str, list[int]]) -> tuple[int, int]:
    """(rows still zero, rows pruned) over the layers in `pruned`: how many pruned rows stayed pruned.

    Fine-tuning all weights, or merging a LoRA update, writes into pruned rows and so revives them.
    """
    modules = dict(model.named_modules())
    still = sum(len(set(zero_rows(modules[name].weight)) & set(rows)) for name, rows in pruned.items())
    return still, sum(len(rows) for rows in pruned.values())

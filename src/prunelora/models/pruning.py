"""Structured L2 pruning as the paper does it: zero the output channels / rows with the smallest L2 norm.

`prune_l2_structured` uses `torch.nn.utils.prune.ln_structured(n=2, dim=0)` and makes the result permanent
right away (`prune.remove`): the weight becomes a plain parameter with zero rows. That order matters for
LoRA: while the pruning re-parametrisation (`weight_orig` * `weight_mask`) is in place, peft's merge writes
the update into a tensor that the mask recomputation then overwrites, so the update is silently dropped.
"""

from __future__ import annotations

import warnings

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


def prune_by_scores(model: nn.Module, names: list[str], amount: float, scores: dict[str, torch.Tensor]
                    ) -> dict[str, list[int]]:
    """Zero `amount` of the output rows of each named layer, those with the highest score (ties: the lower index
    first), as many as `ln_structured` would zero (round(amount x rows)); return the zeroed rows."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    modules = dict(model.named_modules())
    pruned = {}
    for name in names:
        module, score = modules[name], scores[name]
        order = torch.argsort(-score.double(), stable=True)[:round(amount * len(score))]
        mask = torch.ones_like(module.weight)
        mask[order.to(mask.device)] = 0
        prune.custom_from_mask(module, "weight", mask)
        prune.remove(module, "weight")
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


# ---------------------------------------------------------------- channel removal (pruning.mode=remove)


def removal_roots(model: nn.Module, names: list[str], head: str) -> list[str]:
    """The layers whose output channels are removed for the selected `names`: the head is kept whole, and a
    transformer's attention projection / second MLP layer stand for their block's inner width (their output
    is the residual stream every block shares), so their partner qkv / fc1 is the root instead."""
    modules = dict(model.named_modules())
    roots = []
    for name in names:
        if name == head:
            continue
        for suffix, partner in ((".attn.proj", ".attn.qkv"), (".mlp.fc2", ".mlp.fc1")):
            if name.endswith(suffix) and name[: -len(suffix)] + partner in modules:
                name = name[: -len(suffix)] + partner
        if name not in roots:
            roots.append(name)
    return roots


def remove_channels(model: nn.Module, names: list[str], amount: float, head: str, example: torch.Tensor) -> dict:
    """Physically remove `amount` of the output channels of the layers `removal_roots` picks, by the L2 norm of
    each coupled group (Torch-Pruning's dependency graph keeps residual connections, BatchNorms and attention
    heads consistent; every other layer only loses the inputs it no longer receives). Returns
    {layer: [channels before, channels after]} for every layer whose shape changed."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    roots = set(removal_roots(model, names, head))
    ignored = [m for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in roots]
    attentions = [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]
    before = {n: _width(m) for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with warnings.catch_warnings():
        # a ViT's cls_token / pos_embed live in the residual width, which is never a root here
        warnings.filterwarnings("ignore", message="Unwrapped parameters")
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=amount,
            ignored_layers=ignored, num_heads={m.qkv: m.num_heads for m in attentions},
        )
        pruner.step()
    for m in attentions:
        m.num_heads = pruner.num_heads.get(m.qkv, m.num_heads)
        _sync_attention(m)
    after = {n: _width(m) for n, m in model.named_modules() if n in before}
    return {n: [before[n], after[n]] for n in before if before[n] != after[n]}


def _width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def match_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Shrink the layers of a freshly built `model` to the shapes in `state` (a model whose channels were
    removed), so that `load_state_dict` fits; returns how many layers changed. Attention modules get their
    head width back from their qkv layer."""
    changed = 0
    for name, module in model.named_modules():
        weight = state.get(f"{name}.weight" if name else "weight")
        if weight is None or not hasattr(module, "weight") or module.weight is None or module.weight.shape == weight.shape:
            continue
        _resize(module, name, state)
        changed += 1
    for m in model.modules():
        if hasattr(m, "qkv") and hasattr(m, "num_heads") and changed:
            _sync_attention(m)
    return changed


def _sync_attention(m: nn.Module) -> None:
    """timm's Attention reads these in forward: keep them in step with its (possibly narrower) qkv layer."""
    m.head_dim = m.qkv.out_features // (3 * m.num_heads)
    m.attn_dim = m.num_heads * m.head_dim
    m.scale = m.head_dim**-0.5


def _resize(module: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    prefix = f"{name}." if name else ""
    for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        saved = state.get(prefix + key)
        if saved is not None and saved.shape != tensor.shape:
            new = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
            if isinstance(tensor, nn.Parameter):
                setattr(module, key, nn.Parameter(new, requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(key, new)
    shape = state[prefix + "weight"].shape
    if isinstance(module, nn.Conv2d):
        module.out_channels, module.in_channels = shape[0], shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape[0], shape[1]
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(shape)


# ---------------------------------------------------------------- channel removal on a Llama (pruning.mode=remove)
# Torch-Pruning 1.6.0's dependency graph did not finish grouping transformers 5.25's Llama (over 10 minutes in
# `get_all_groups` on llama-tiny, 2 layers): the two structures a Llama's width splits into are sliced here
# directly, each scored by the L2 norm of all the weights it owns, as Torch-Pruning's group magnitude scores them.
# MLP channel i owns gate and up row i and down column i; a key-value group (grouped-query attention) owns its k
# and v rows, the rows of the query heads that read it and those heads' o columns. The residual width is kept.


def _slice(linear: nn.Linear, keep: torch.Tensor, dim: int, mask: bool) -> None:
    """Keep only the rows (dim 0) or columns (dim 1) `keep` of `linear` (mask: zero the others instead)."""
    with torch.no_grad():
        if mask:
            drop = torch.ones(linear.weight.shape[dim], dtype=torch.bool, device=keep.device)
            drop[keep] = False
            linear.weight[(drop, slice(None)) if dim == 0 else (slice(None), drop)] = 0
            return
        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep.to(linear.weight.device)).contiguous(),
                                     requires_grad=linear.weight.requires_grad)
    if dim == 0:
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)


def _kept(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """The indices kept when round(amount x n) of the lowest scores go (at least one kept), in order."""
    drop = min(round(amount * len(scores)), len(scores) - 1)
    return torch.argsort(scores, descending=True, stable=True)[: len(scores) - drop].sort().values


def remove_llama_mlp(mlp: nn.Module, amount: float, mask: bool = False) -> tuple[int, int]:
    """Remove `amount` of an MLP's intermediate channels (lowest L2 norm of gate row, up row and down column);
    returns (channels before, after)."""
    norms = (mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
             + mlp.down_proj.weight.pow(2).sum(0)).sqrt()
    keep = _kept(norms.detach(), amount)
    for linear, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
        _slice(linear, keep, dim, mask)
    return len(norms), len(keep)


def remove_llama_heads(attention: nn.Module, amount: float, mask: bool = False) -> tuple[int, int]:
    """Remove `amount` of an attention's key-value groups with their query heads (lowest L2 norm of every weight
    the group owns); returns (query heads before, after). With `mask`, the removed groups' v rows and query heads'
    o columns are zeroed instead (their output is then exactly nothing, as when removed)."""
    d, group = attention.head_dim, attention.num_key_value_groups
    kv = attention.k_proj.weight.shape[0] // d
    per_kv = lambda w: w.detach().pow(2).reshape(kv, -1).sum(1)
    norms = (per_kv(attention.k_proj.weight) + per_kv(attention.v_proj.weight) + per_kv(attention.q_proj.weight)
             + per_kv(attention.o_proj.weight.t().contiguous())).sqrt()
    groups = _kept(norms, amount)
    kv_rows = (groups[:, None] * d + torch.arange(d)).flatten()
    q_rows = ((groups[:, None] * group + torch.arange(group))[..., None] * d + torch.arange(d)).flatten()
    if mask:
        _slice(attention.v_proj, kv_rows, 0, True)
        _slice(attention.o_proj, q_rows, 1, True)
    else:
        for linear, rows, dim in ((attention.q_proj, q_rows, 0), (attention.k_proj, kv_rows, 0),
                                  (attention.v_proj, kv_rows, 0), (attention.o_proj, q_rows, 1)):
            _slice(linear, rows, dim, False)
    return kv * group, len(groups) * group


def remove_llama_channels(model: nn.Module, names: list[str], amount: float, mask: bool = False) -> dict:
    """Remove `amount` of the MLP channels of every decoder layer whose gate, up or down projection is among
    `names`, and of the key-value groups of every layer whose q, k, v or o projection is; returns {module:
    [before, after]} (MLP: channels; attention: query heads) for every module that changed."""
    chosen = set(names)
    changed = {}
    for name, module in model.named_modules():
        owned = {f"{name}.{p}" for p in ("gate_proj", "up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "o_proj")}
        if not owned & chosen:
            continue
        if hasattr(module, "gate_proj"):
            changed[name] = list(remove_llama_mlp(module, amount, mask))
        elif hasattr(module, "num_key_value_groups"):
            changed[name] = list(remove_llama_heads(module, amount, mask))
    return {k: v for k, v in changed.items() if v[0] != v[1]}

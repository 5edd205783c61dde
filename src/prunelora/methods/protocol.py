"""The method protocol: what a method receives and returns, how it registers, and the services the task offers it.

A method is a function `(model, task, ctx) -> Unlearned`, declared in `catalog.py` (name, summary, the config
sections it uses, its own settings) or registered with `@register_method(name, summary, uses, config)`. It gets a
copy of the original model (which it may modify), the `UnlearnTask` (data, splits, the resolved config, its own
hyper-parameters, and services: its recipe, pruning, layer selection, frozen copies) and the context (device, seed,
meter), and returns a plain `nn.Module` ready for evaluation plus facts worth reporting.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import ImageData, Splits
from ..data.catalog import is_text
from ..engine.context import Context
from ..engine.loop import Recipe, recipe_from
from ..errors import UserError
from ..models import arch_of, classifier_name, get_spec, select_layers
from ..models.pruning import (
    count_zero_rows,
    prune_by_scores,
    prune_l2_structured,
    remove_channels,
    remove_llama_channels,
)
from .catalog import METHODS, MethodConfig, MethodSpec, RecipeConfig, register_method

FORGET_AWARE_RETAIN = 4  # retain samples drawn per forget sample to score forget-aware pruning


@dataclass
class UnlearnTask:
    """What a method works on, and the services it shares with the other methods."""

    data: ImageData
    splits: Splits
    config: object  # the resolved ExperimentConfig (a variant's, for a variant)
    hparams: MethodConfig = field(default_factory=lambda: RecipeConfig())  # the running method's own settings
    removed: dict = field(default_factory=dict)  # set by prune() with pruning.mode=remove

    def layers(self, model: nn.Module, kind: str) -> list[str]:
        """The layers the config's `pruning.targets` (kind='prune') or `lora.targets` (kind='lora') select."""
        spec = get_spec(self.config.model.name)
        targets = self.config.pruning.targets if kind == "prune" else self.config.lora.targets
        return select_layers(model, spec.family, targets, kind, arch_of(self.config.model).get("depth"))

    def prune(self, model: nn.Module, ctx: Context | None = None) -> dict[str, list[int]]:
        """L2-prune the layers of `pruning.targets` (with `pruning.forget_head_rows` for the head), or with
        `pruning.importance=forget` prune the rows most specific to the forget set (needs `ctx`); returns the
        zeroed rows per layer (mode=mask), or {} after removing the channels (mode=remove; what was removed is
        then in `self.removed`)."""
        cfg = self.config.pruning
        names = self.layers(model, "prune")
        if cfg.mode == "remove":
            self.removed = self._remove(model, names)
            return {}
        if cfg.importance == "forget":
            return prune_by_scores(model, names, cfg.amount, self.forget_specificity(model, names, ctx))
        rule = None
        if cfg.forget_head_rows != "l2":
            head = classifier_name(model)
            if head not in names:
                raise UserError(f"pruning.forget_head_rows={cfg.forget_head_rows} needs the head among the pruned layers, "
                                f"but pruning.targets={cfg.targets} does not prune it")
            rule = {head: (cfg.forget_head_rows, list(self.splits.forget_classes))}
        return prune_l2_structured(model, names, cfg.amount, rule)

    def forget_specificity(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        """Per layer and row, mean |activation| on the forget set over that on a seeded draw of as many retain
        samples as `FORGET_AWARE_RETAIN` x the forget set (at least 256): `importance.forget_specificity`."""
        from .importance import forget_specificity, mean_abs_outputs

        generator = torch.Generator().manual_seed(ctx.seed)
        forget, retain = self.splits.forget, self.splits.retain
        some = retain[torch.randperm(len(retain), generator=generator)[:max(256, FORGET_AWARE_RETAIN * len(forget))]]
        means = [mean_abs_outputs(model, names, self._passes(model, rows, ctx)) for rows in (forget, some)]
        return forget_specificity(*means)

    def _passes(self, model: nn.Module, rows: torch.Tensor, ctx: Context, batch_size: int = 128):
        """(run, keep) per batch of train `rows`: images normalised as the model sees them; text rows as token ids
        with the real tokens kept."""
        data = self.data
        for chunk in rows.split(batch_size):
            chunk = chunk.to(data.x_train.device)
            if is_text(data):
                ids = data.batch(chunk)[0].to(ctx.device)
                yield (lambda ids=ids: model(input_ids=ids)), ids != data.pad_id
            else:
                x = ctx.model_input(data, data.x_train[chunk])
                yield (lambda x=x: model(x)), None

    def _remove(self, model: nn.Module, names: list[str]) -> dict:
        data = self.data
        params = sum(p.numel() for p in model.parameters())
        if is_text(data):  # a Llama: MLP channels and key-value groups of the selected projections' layers
            layers = remove_llama_channels(model, names, self.config.pruning.amount)
        else:
            device = next(model.parameters()).device
            example = torch.zeros(1, data.in_chans, data.image_size, data.image_size, device=device)
            layers = remove_channels(model, names, self.config.pruning.amount, classifier_name(model), example)
        return {"removed_layers": len(layers), "params_before": params,
                "params_after": sum(p.numel() for p in model.parameters())}

    def pruning_info(self, model: nn.Module, pruned: dict[str, list[int]]) -> dict:
        """Facts for the report: pruned layers and rows, how many rows are still zero in the final `model`,
        and which forgotten classes' head rows were pruned (when the head was); after channel removal, the
        parameter counts before and after."""
        if self.removed:
            return dict(self.removed)
        if not pruned:
            return {}
        still, total = count_zero_rows(model, pruned)
        info = {"pruned_layers": len(pruned), "pruned_rows": total, "pruned_rows_still_zero": still}
        head = classifier_name(model)
        if head in pruned:
            info["forget_head_rows_pruned"] = sorted(set(pruned[head]) & set(self.splits.forget_classes))
        return info

    def unlearn_recipe(self) -> Recipe:
        """The `unlearn` section's recipe with the method's own overrides (hparams.<method>.epochs, lr, ...)."""
        return self.hparams.apply(recipe_from(self.config.unlearn))

    def original_like(self, model: nn.Module) -> nn.Module:
        """A frozen copy (eval mode, no gradients): a teacher, or the model an attack probes."""
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen

    def forget_mask(self, device: torch.device) -> torch.Tensor:
        """Boolean mask over the train set: True for forget samples."""
        mask = torch.zeros(len(self.data.y_train), dtype=torch.bool)
        mask[self.splits.forget] = True
        return mask.to(device)

    def train_recipe(self) -> Recipe:
        return recipe_from(self.config.train)


@dataclass
class Unlearned:
    """What a method returns."""

    model: nn.Module  # a plain module (adapters merged, hooks removed), ready for evaluation
    epochs: int  # training epochs the method ran (for seconds per epoch)
    info: dict = field(default_factory=dict)  # facts for the report (trainable params, pruned rows, ...)


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters of `model` require gradients (for the report)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unfreeze(model: nn.Module) -> nn.Module:
    """Every parameter of `model` trainable (a method that trains all weights starts here); returns `model`."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


__all__ = [
    "METHODS", "MethodConfig", "MethodSpec", "RecipeConfig", "UnlearnTask", "Unlearned", "register_method",
    "trainable_parameters", "unfreeze",
]

"""Unlearning methods: one file each, registered by name in `METHODS`.

A method is a function `(model, task, ctx) -> Unlearned`: it gets a copy of the original model (which
it may modify), the task (data, splits, resolved config) and the context (device, seed, meter), and
returns a plain `nn.Module` ready for evaluation plus facts worth reporting. Shared pieces (the training
loop, pruning, adapters) live once, in `_train.py`, `..pruning` and `..adapters`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..data import ImageData, Splits
from ..models import HEAD, arch_of, get_spec, select_layers
from ..registry import Registry
from ._train import Recipe, recipe_from


@dataclass
class UnlearnTask:
    data: ImageData
    splits: Splits
    config: object  # the resolved ExperimentConfig

    def layers(self, model: nn.Module, kind: str) -> list[str]:
        """The layers the config's `pruning.targets` (kind='prune') or `lora.targets` (kind='lora') select."""
        spec = get_spec(self.config.model.name)
        targets = self.config.pruning.targets if kind == "prune" else self.config.lora.targets
        return select_layers(model, spec.family, targets, kind, arch_of(self.config.model).get("depth"))

    def unlearn_recipe(self) -> Recipe:
        return recipe_from(self.config.unlearn)

    def train_recipe(self) -> Recipe:
        return recipe_from(self.config.train)


@dataclass
class Unlearned:
    model: nn.Module
    epochs: int  # training epochs the method ran (for seconds per epoch)
    info: dict = field(default_factory=dict)  # facts for the report (trainable params, pruned rows, ...)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable[[nn.Module, UnlearnTask, object], Unlearned]
    summary: str
    uses: tuple[str, ...]  # config sections that set this method's hyper-parameters


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(name: str, summary: str, uses: tuple[str, ...] = ("unlearn",)):
    def wrap(fn):
        METHODS.add(name, MethodSpec(name, fn, summary, uses))
        return fn

    return wrap


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["HEAD", "METHODS", "MethodSpec", "UnlearnTask", "Unlearned", "register_method", "trainable_parameters"]

for _module in ("retrain", "finetune", "prune_finetune", "lora", "prunelora"):
    importlib.import_module(f"{__name__}.{_module}")

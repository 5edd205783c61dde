"""Unlearning methods: one file each, registered by name in `METHODS`.

A method is a function `(model, task, ctx) -> Unlearned`: it gets a copy of the original model (which
it may modify), the task (data, splits, resolved config) and the context (device, seed, meter), and
returns a plain `nn.Module` ready for evaluation plus facts worth reporting. Shared pieces (the training
loop, pruning, adapters) live once, in `_train.py`, `..pruning` and `..adapters`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .. import config as C
from ..data import ImageData, Splits
from ..errors import UserError
from ..models import HEAD, arch_of, classifier_name, get_spec, select_layers
from ..pruning import count_zero_rows, prune_l2_structured, remove_channels
from ..registry import Registry, unknown_name_message
from ._train import Recipe, recipe_from


@dataclass
class MethodConfig:
    """A method's own hyper-parameters (hparams.<method>.<key>); this base has none."""

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe


@dataclass
class RecipeConfig(MethodConfig):
    """The hyper-parameters of a method that trains with the `unlearn` recipe: where it differs from that
    section (None = the section's value). A method's own config subclasses this, adds its fields and may
    set other defaults (e.g. gradient ascent's smaller learning rate)."""

    epochs: int | None = None  # passes over the method's main data stream
    lr: float | None = None
    optimizer: str | None = None  # sgd | adam | adamw
    batch_size: int | None = None  # images per step
    weight_decay: float | None = None
    bn: str | None = None  # BatchNorm mode (see unlearn.bn)

    def apply(self, recipe: Recipe) -> Recipe:
        for f in fields(RecipeConfig):
            value = getattr(self, f.name)
            if value is not None:
                setattr(recipe, f.name, value)
        return recipe


@dataclass
class UnlearnTask:
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

    def prune(self, model: nn.Module) -> dict[str, list[int]]:
        """L2-prune the layers of `pruning.targets` (with `pruning.forget_head_rows` for the head); returns
        the zeroed rows per layer (mode=mask), or {} after removing the channels (mode=remove; what was
        removed is then in `self.removed`)."""
        cfg = self.config.pruning
        names = self.layers(model, "prune")
        if cfg.mode == "remove":
            self.removed = self._remove(model, names)
            return {}
        rule = None
        if cfg.forget_head_rows != "l2":
            head = classifier_name(model)
            if head not in names:
                raise UserError(f"pruning.forget_head_rows={cfg.forget_head_rows} needs the head among the pruned layers, "
                                f"but pruning.targets={cfg.targets} does not prune it")
            rule = {head: (cfg.forget_head_rows, list(self.splits.forget_classes))}
        return prune_l2_structured(model, names, cfg.amount, rule)

    def _remove(self, model: nn.Module, names: list[str]) -> dict:
        data = self.data
        device = next(model.parameters()).device
        example = torch.zeros(1, data.in_chans, data.image_size, data.image_size, device=device)
        params = sum(p.numel() for p in model.parameters())
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
    model: nn.Module
    epochs: int  # training epochs the method ran (for seconds per epoch)
    info: dict = field(default_factory=dict)  # facts for the report (trainable params, pruned rows, ...)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable[[nn.Module, UnlearnTask, object], Unlearned]
    summary: str
    uses: tuple[str, ...]  # config sections that set this method's hyper-parameters
    config: type[MethodConfig] = RecipeConfig  # its own hyper-parameters (hparams.<name>.<key>)


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str, summary: str, uses: tuple[str, ...] = ("unlearn",), config: type[MethodConfig] = RecipeConfig
):
    def wrap(fn):
        METHODS.add(name, MethodSpec(name, fn, summary, uses, config))
        return fn

    return wrap


VARIANT_SECTIONS = ("unlearn", "pruning", "lora", "hparams")  # what a variant may change: never the original


def method_hparams(cfg, name: str) -> MethodConfig:
    """Method `name`'s settings: its config class's defaults <- `hparams.<name>` of `cfg`."""
    spec = METHODS.get(name)
    hp = C.from_dict(spec.config, cfg.hparams.get(name) or {}, f"hparams.{name}.")
    if isinstance(hp, RecipeConfig):
        C._check_recipe(f"hparams.{name}", hp)
    return hp


def base_method(cfg, name: str) -> str:
    """The registered method behind `name` (itself, or a variant's `method`)."""
    return cfg.variants[name]["method"] if name in cfg.variants else METHODS.get(name).name


def variant_config(cfg, name: str):
    """The experiment config of variant `name`: `cfg` with the variant's section overrides applied."""
    overrides = copy.deepcopy(cfg.variants[name])
    overrides.pop("method")
    values = C._merge(C.to_dict(cfg), overrides)
    values["variants"] = {}
    return C.from_dict(C.ExperimentConfig, values)


def resolve_methods(cfg) -> None:
    """Check `methods`, `variants` and `hparams` of a config (in place); expand `all`; fill each used method's
    hyper-parameters so that the saved config shows every value that ran."""
    for name, variant in cfg.variants.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):  # it names files under --out
            raise UserError(f"variant name '{name}' may use only letters, digits, '_', '.' and '-', starting with a letter or digit")
        if name in METHODS:
            raise UserError(f"variant name '{name}' is a registered method; name the variant differently")
        if not isinstance(variant, dict) or "method" not in variant:
            raise UserError(f"variants.{name} needs a base method, e.g. variants.{name}.method=prunelora")
        if str(variant["method"]) not in METHODS:
            raise UserError(f"variants.{name}.method: " + unknown_name_message("method", str(variant["method"]), METHODS.names()))
        extra = sorted(set(variant) - {"method", *VARIANT_SECTIONS})
        if extra:
            raise UserError(f"variants.{name}.{extra[0]} cannot be set: a variant may change only method, {', '.join(VARIANT_SECTIONS)}")
    known = METHODS.names() + list(cfg.variants)
    if cfg.methods == ["all"]:
        cfg.methods = known
    for name in cfg.methods:
        if name not in known:
            raise UserError(unknown_name_message("method", name, known))
    if len(set(cfg.methods)) != len(cfg.methods):
        raise UserError(f"methods lists a method twice ({', '.join(cfg.methods)}); name each once")
    for name in cfg.hparams:
        if name not in METHODS:
            raise UserError(f"hparams.{name}: " + unknown_name_message("method", name, METHODS.names()))
    for name in dict.fromkeys([base_method(cfg, m) for m in cfg.methods] + list(cfg.hparams)):
        cfg.hparams[name] = C.to_dict(method_hparams(cfg, name))
    for name in cfg.variants:
        vcfg = variant_config(cfg, name)
        method_hparams(vcfg, cfg.variants[name]["method"])


def method_task(task: UnlearnTask, name: str) -> tuple[MethodSpec, UnlearnTask]:
    """The spec of method (or variant) `name` and the task it runs on: its config and hyper-parameters."""
    cfg = task.config
    base = base_method(cfg, name)
    if name in cfg.variants:
        cfg = variant_config(cfg, name)
    return METHODS.get(base), dataclasses.replace(task, config=cfg, hparams=method_hparams(cfg, base), removed={})


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["HEAD", "METHODS", "MethodConfig", "MethodSpec", "RecipeConfig", "UnlearnTask", "Unlearned", "register_method", "trainable_parameters"]

BASELINES = ("grad_ascent", "neggrad_plus", "random_labels", "l1_sparse", "salun", "scrub", "ssd", "bad_teacher", "boundary_shrink")
for _module in ("retrain", "finetune", "prune_finetune", "lora", "prunelora", *BASELINES):
    importlib.import_module(f"{__name__}.{_module}")

"""Which method runs, with which settings: a method's hyper-parameters (`hparams.<method>`), variants (a method
run under another name with changed sections), and the check that fills every used method's settings into the
resolved config. Light: the command line checks a config with it before PyTorch is imported.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import TYPE_CHECKING

from .. import config as C
from ..errors import UserError
from ..registry import unknown_name_message
from .catalog import METHODS, MethodConfig, MethodSpec, RecipeConfig

if TYPE_CHECKING:  # the task carries tensors; resolving a config needs no PyTorch
    from .protocol import UnlearnTask

VARIANT_SECTIONS = ("unlearn", "pruning", "lora", "hparams")  # what a variant may change: never the original


def method_hparams(cfg, name: str) -> MethodConfig:
    """Method `name`'s settings: its config class's defaults <- `hparams.<name>` of `cfg`."""
    spec = METHODS.get(name)
    hp = C.from_dict(spec.config, cfg.hparams.get(name) or {}, f"hparams.{name}.")
    if isinstance(hp, RecipeConfig):
        C.check_recipe(f"hparams.{name}", hp)
    return hp


def base_method(cfg, name: str) -> str:
    """The registered method behind `name` (itself, or a variant's `method`)."""
    return cfg.variants[name]["method"] if name in cfg.variants else METHODS.get(name).name


def variant_config(cfg, name: str):
    """The experiment config of variant `name`: `cfg` with the variant's section overrides applied."""
    overrides = copy.deepcopy(cfg.variants[name])
    overrides.pop("method")
    values = C.merge(C.to_dict(cfg), overrides)
    values["variants"] = {}
    return C.from_dict(C.ExperimentConfig, values)


def resolve_methods(cfg) -> None:
    """Check `methods`, `variants` and `hparams` of a config (in place); expand `all`; fill each used method's
    hyper-parameters so that the saved config shows every value that ran."""
    for name, variant in cfg.variants.items():
        _check_variant(name, variant)
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


def _check_variant(name: str, variant) -> None:
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


def method_task(task: UnlearnTask, name: str) -> tuple[MethodSpec, UnlearnTask]:
    """The spec of method (or variant) `name` and the task it runs on: its config and hyper-parameters."""
    cfg = task.config
    base = base_method(cfg, name)
    if name in cfg.variants:
        cfg = variant_config(cfg, name)
    return METHODS.get(base), dataclasses.replace(task, config=cfg, hparams=method_hparams(cfg, base), removed={})

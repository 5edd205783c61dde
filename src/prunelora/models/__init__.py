"""Model presets: `create_model(config, num_classes, in_chans, image_size)` and `list_models()`.

A preset fixes an architecture and its family's defaults: which layers the paper prunes and adapts
(`prune_targets` / `lora_targets`, regexes over module names, by preset name), LoRA rank and alpha,
and the training recipe of the original model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import UserError
from ..registry import Registry
from .resnet import resnet18, resnet50
from .vit import vit

HEAD = "head"  # the classifier of the built-in models (timm's convention); other models: classifier_name()
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Recipe:
    epochs: int
    optimizer: str
    lr: float  # peak learning rate
    weight_decay: float


@dataclass(frozen=True)
class ModelSpec:
    family: str  # resnet | vit
    build: Callable[..., nn.Module]
    arch: dict  # width/depth/heads/patch_size defaults, overridable by the config
    recipe: Recipe  # how the original (and retrain) is trained
    lora_r: int
    lora_alpha: float
    description: str = ""
    extra: dict = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")

_RESNET_RECIPE = Recipe(epochs=8, optimizer="sgd", lr=0.1, weight_decay=5e-4)
_VIT_RECIPE = Recipe(epochs=30, optimizer="adamw", lr=2e-3, weight_decay=0.05)

for _name, _fn, _width, _doc in [
    ("resnet18", resnet18, 64, "CIFAR ResNet-18 (BasicBlock), width 64"),
    ("resnet18-tiny", resnet18, 32, "CIFAR ResNet-18, width 32: the CPU default"),
    ("resnet50", resnet50, 64, "CIFAR ResNet-50 (Bottleneck), width 64: the paper's model"),
    ("resnet50-tiny", resnet50, 8, "CIFAR ResNet-50, width 8"),
]:
    MODELS.add(_name, ModelSpec("resnet", _fn, {"width": _width}, _RESNET_RECIPE, 8, 16, _doc))

MODELS.add("vit-paper", ModelSpec(
    "vit", vit, {"width": 384, "depth": 12, "heads": 6, "patch_size": 4}, _VIT_RECIPE, 16, 32,
    "ViT, 12 blocks, 6 heads, width 384, patch 4: the paper's model"))
MODELS.add("vit-tiny", ModelSpec(
    "vit", vit, {"width": 64, "depth": 4, "heads": 4, "patch_size": 4}, _VIT_RECIPE, 16, 32,
    "ViT, 4 blocks, 4 heads, width 64, patch 4"))


_TIMM_RECIPE = Recipe(epochs=30, optimizer="adamw", lr=1e-3, weight_decay=0.05)


def get_spec(name: str) -> ModelSpec:
    """The preset of a model name; `timm:<name>` is any timm architecture (generic layer presets)."""
    if name.startswith(TIMM_PREFIX):
        return ModelSpec("timm", _build_timm, {}, _TIMM_RECIPE, 8, 16, f"timm model {name[len(TIMM_PREFIX):]}")
    return MODELS.get(name)


def _build_timm(name: str, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    import timm

    if not timm.list_models(name) and not timm.list_models(name, pretrained=True):
        close = timm.list_models(f"*{name[:4]}*")[:8]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise UserError(f"unknown timm model '{name}'.{hint} See timm.list_models().")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except (OSError, RuntimeError) as err:
        raise UserError(f"could not build timm model '{name}' ({err}); without internet use model.init=FILE") from None


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier (`get_classifier()` where the model has it, else `head`)."""
    get = getattr(model, "get_classifier", None)
    if get is not None:
        target = get()
        for name, module in model.named_modules():
            if module is target:
                return name
    return HEAD


def target_presets(family: str, depth: int | None = None) -> dict[str, dict[str, str]]:
    """Named layer selections per family: {preset: {"prune": regex, "lora": regex}}; `{head}` stands for the
    classifier's module name."""
    if family == "resnet":
        convs, shortcuts = r"layer\d+\.\d+\.conv\d", r"layer\d+\.\d+\.shortcut\.0"
        every = rf"conv1|{convs}|{shortcuts}"
        return {
            # the paper and its authors' code: prune every Conv2d (stem and shortcuts included); LoRA on the
            # block convolutions only (their regex .*\.(conv1|conv2|conv3|fc) matches neither stem nor shortcut)
            "paper": {"prune": every, "lora": convs},
            # LoRA on the shortcut convolutions too (this project's `paper` preset before it followed the code)
            "paper_shortcuts": {"prune": every, "lora": rf"{convs}|{shortcuts}"},
            "blocks": {"prune": rf"{convs}|{shortcuts}", "lora": rf"{convs}|{shortcuts}"},
        }
    if family == "timm":  # any architecture: every Conv2d / Linear except the classifier
        return {"paper": {"prune": "(?!{head}$).*", "lora": "(?!{head}$).*"}}
    last = f"blocks\\.{(depth or 1) - 1}\\.attn\\.proj"
    linears = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc\d)"
    return {
        # the paper: the last block's attention output projection and the head are pruned; LoRA on the former
        "paper": {"prune": rf"{last}|{{head}}", "lora": last},
        # what the authors' ViT code trained: the same pruning, LoRA on the head alone (its bias frozen, no
        # full head training). Their adapter on nn.MultiheadAttention.out_proj is never called: the attention
        # reads out_proj.weight directly
        "authors_code": {"prune": rf"{last}|{{head}}", "lora": "{head}"},
        "all": {"prune": rf"{linears}|{{head}}", "lora": linears},
        "no_head": {"prune": last, "lora": last},
    }


def arch_of(config) -> dict:
    """The architecture arguments of a model config, preset values filled in."""
    spec = get_spec(config.name)
    arch = dict(spec.arch)
    for key in ("width", "depth", "heads", "patch_size"):
        value = getattr(config, key)
        if value is not None:
            if key not in arch:
                raise UserError(f"model '{config.name}' has no '{key}'; remove model.{key} (it takes: {', '.join(arch)})")
            arch[key] = value
    return arch


def create_model(config, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Build the model a config describes, for `num_classes` classes and `in_chans` x image_size^2 inputs."""
    spec = get_spec(config.name)
    arch = arch_of(config)
    if spec.family == "timm":
        return spec.build(config.name[len(TIMM_PREFIX):], num_classes, in_chans, config.pretrained)
    if spec.family == "vit":
        if image_size % arch["patch_size"]:
            raise UserError(f"image size {image_size} is not a multiple of model.patch_size {arch['patch_size']}")
        if arch["width"] % arch["heads"]:
            raise UserError(f"model.width {arch['width']} is not a multiple of model.heads {arch['heads']}")
        return spec.build(num_classes, in_chans, img_size=image_size, **arch)
    return spec.build(num_classes, in_chans, **arch)


def select_layers(model: nn.Module, family: str, targets: str, kind: str, depth: int | None = None) -> list[str]:
    """Names of the Conv2d / Linear layers a target preset (or a regex) selects, for kind prune | lora."""
    presets = target_presets(family, depth)
    pattern = presets[targets][kind] if targets in presets else targets
    pattern = pattern.replace("{head}", re.escape(classifier_name(model)))
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(f"targets '{targets}' is neither a preset ({', '.join(presets)}) nor a valid regex: {err}") from None
    names = [
        name for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and regex.fullmatch(name)
    ]
    if not names:
        raise UserError(f"targets '{targets}' selects no Conv2d/Linear layer; use a preset ({', '.join(presets)}) or a regex")
    return names

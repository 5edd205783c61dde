"""Model presets: each name fixes an architecture, its family, its defaults (architecture, the original's training,
LoRA rank and alpha); `create_model(config, num_classes, in_chans, image_size)` builds one, and `timm:<name>` any
timm architecture. The presets are read without importing PyTorch; a builder is imported when a model is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UserError
from ..registry import Registry, resolve

if TYPE_CHECKING:
    from torch import nn

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class TrainDefaults:
    """How a model family's original (and retrain) is trained unless the `train` section says otherwise."""

    epochs: int
    optimizer: str
    lr: float  # peak learning rate
    weight_decay: float
    batch_size: int = 128  # samples per step
    schedule: str = "onecycle"
    clip: float = 0.0  # gradient-norm clipping; 0 = off


@dataclass(frozen=True)
class ModelSpec:
    """A model preset: its family (which layer presets apply), builder and defaults."""

    family: str  # resnet | vit | timm | llama
    builder: Callable[..., nn.Module] | str  # or 'module:function', imported when a model is built
    arch: dict  # width/depth/heads/patch_size defaults, overridable by the config
    train_defaults: TrainDefaults  # how the original (and retrain) is trained: train.* values left None
    lora_r: int
    lora_alpha: float
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def build(self) -> Callable[..., nn.Module]:
        return resolve(self.builder)


MODELS: Registry[ModelSpec] = Registry("model")

_RESNET_TRAINING = TrainDefaults(epochs=8, optimizer="sgd", lr=0.1, weight_decay=5e-4)
_VIT_TRAINING = TrainDefaults(epochs=30, optimizer="adamw", lr=2e-3, weight_decay=0.05)

_RESNET18, _RESNET50, _VIT = (f"{__package__}.resnet:resnet18", f"{__package__}.resnet:resnet50",
                              f"{__package__}.vit:vit")

for _name, _fn, _width, _doc in [
    ("resnet18", _RESNET18, 64, "CIFAR ResNet-18 (BasicBlock), width 64"),
    ("resnet18-tiny", _RESNET18, 32, "CIFAR ResNet-18, width 32: the CPU default"),
    ("resnet50", _RESNET50, 64, "CIFAR ResNet-50 (Bottleneck), width 64: the paper's model"),
    ("resnet50-tiny", _RESNET50, 8, "CIFAR ResNet-50, width 8"),
]:
    MODELS.add(_name, ModelSpec("resnet", _fn, {"width": _width}, _RESNET_TRAINING, 8, 16, _doc))

MODELS.add("vit-paper", ModelSpec(
    "vit", _VIT, {"width": 384, "depth": 12, "heads": 6, "patch_size": 4}, _VIT_TRAINING, 16, 32,
    "ViT, 12 blocks, 6 heads, width 384, patch 4: the paper's model"))
MODELS.add("vit-tiny", ModelSpec(
    "vit", _VIT, {"width": 64, "depth": 4, "heads": 4, "patch_size": 4}, _VIT_TRAINING, 16, 32,
    "ViT, 4 blocks, 4 heads, width 64, patch 4"))


# text: AdamW 3e-3, 5% warm-up then cosine to 10%, batch 32 questions, clip 1.0; the original memorises its
# answers in 15 epochs (docs/results_lm.md)
_LLAMA_TRAINING = TrainDefaults(epochs=15, optimizer="adamw", lr=3e-3, weight_decay=0.0, batch_size=32,
                                schedule="warmup_cosine", clip=1.0)
MODELS.add("llama-tiny", ModelSpec(
    "llama", f"{__package__}.llama:llama", {"width": 128, "depth": 2, "heads": 4, "kv_heads": 2, "mlp": 344},
    _LLAMA_TRAINING, 8, 16, "Llama (transformers), 2 layers, width 128, 4 heads, 2 KV heads, MLP 344: about 0.6M "
    "parameters with a 2,048-token vocabulary, the text default"))

TEXT_MODEL = "llama-tiny"  # the model a text data set runs when model.name is left at the image default

_TIMM_TRAINING = TrainDefaults(epochs=30, optimizer="adamw", lr=1e-3, weight_decay=0.05)


def get_spec(name: str) -> ModelSpec:
    """The preset of a model name; `timm:<name>` is any timm architecture (generic layer presets)."""
    if name.startswith(TIMM_PREFIX):
        return ModelSpec("timm", _build_timm, {}, _TIMM_TRAINING, 8, 16, f"timm model {name[len(TIMM_PREFIX):]}")
    return MODELS.get(name)


def check_timm_name(name: str) -> None:
    """A UserError unless timm knows architecture `name` (imports timm)."""
    import timm

    if not timm.list_models(name) and not timm.list_models(name, pretrained=True):
        close = timm.list_models(f"*{name[:4]}*")[:8]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise UserError(f"unknown timm model '{name}'.{hint} See timm.list_models().")


def _build_timm(name: str, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    import timm

    check_timm_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except (OSError, RuntimeError) as err:
        raise UserError(f"could not build timm model '{name}' ({err}); without internet use model.init=FILE") from None


def arch_of(config) -> dict:
    """The architecture arguments of a model config, preset values filled in."""
    spec = get_spec(config.name)
    arch = dict(spec.arch)
    for key in ("width", "depth", "heads", "patch_size"):
        value = getattr(config, key)
        if value is not None:
            if key not in arch:
                takes = f"it takes: {', '.join(arch)}" if arch else "a timm model is set by its name alone"
                raise UserError(f"model '{config.name}' has no '{key}'; remove model.{key} ({takes})")
            arch[key] = value
    return arch


def create_model(config, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Build the model a config describes, for `num_classes` classes and `in_chans` x image_size^2 inputs."""
    spec = get_spec(config.name)
    arch = arch_of(config)
    if spec.family == "timm":
        return spec.build(config.name[len(TIMM_PREFIX):], num_classes, in_chans, config.pretrained)
    if spec.family == "llama":  # a text data set's shape: num_classes = its vocabulary, image_size = its longest row
        return spec.build(num_classes, image_size, **arch)
    if spec.family == "vit":
        if image_size % arch["patch_size"]:
            raise UserError(f"image size {image_size} is not a multiple of model.patch_size {arch['patch_size']}")
        if arch["width"] % arch["heads"]:
            raise UserError(f"model.width {arch['width']} is not a multiple of model.heads {arch['heads']}")
        return spec.build(num_classes, in_chans, img_size=image_size, **arch)
    return spec.build(num_classes, in_chans, **arch)

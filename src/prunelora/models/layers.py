"""Which layers a method prunes or adapts: the classifier's name, named layer presets per model family (`paper`,
...) and `select_layers`, which turns a preset or a regex into module names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from torch import nn

HEAD = "head"  # the classifier of the built-in models (timm's convention); other models: classifier_name()


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier (`get_classifier()` where the model has it, else `head`)."""
    if hasattr(model, "get_output_embeddings"):  # a transformers language model: its vocabulary projection
        return "lm_head"
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
    if family == "llama":  # transformers' Llama: every projection of every decoder layer, never the embeddings
        mlp, attn = r"model\.layers\.\d+\.mlp\.(gate|up|down)_proj", r"model\.layers\.\d+\.self_attn\.[qkvo]_proj"
        return {
            # the paper's rule on a Llama: the attention projections, as the paper's ViT prunes and adapts its
            # attention's output projection; of mlp, attn and all, attn came closest to the retrained model at every
            # seed measured (docs/results_lm.md)
            "paper": {"prune": attn, "lora": attn},
            "mlp": {"prune": mlp, "lora": mlp},
            "attn": {"prune": attn, "lora": attn},
            "all": {"prune": rf"{mlp}|{attn}", "lora": rf"{mlp}|{attn}"},
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


def select_layers(model: nn.Module, family: str, targets: str, kind: str, depth: int | None = None) -> list[str]:
    """Names of the Conv2d / Linear layers a target preset (or a regex) selects, for kind prune | lora."""
    from torch import nn

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

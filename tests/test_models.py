"""Model presets, their outputs, and the layer selections for pruning and LoRA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunelora.config import ModelConfig, load_config
from prunelora.errors import UserError
from prunelora.methods import UnlearnTask
from prunelora.models import HEAD, MODELS, arch_of, create_model, select_layers, target_presets
from prunelora.registry import Registry
from prunelora.workflows.experiment import resolve_config

SMALL = {"resnet": {"width": 4}, "vit": {"width": 32, "depth": 2, "heads": 2}}


def _small(name: str, **extra) -> ModelConfig:
    spec = MODELS.get(name)
    return ModelConfig(name=name, **{**SMALL[spec.family], **extra})


IMAGE_MODELS = [n for n in MODELS.names() if MODELS.get(n).family != "llama"]  # text models: tests/test_text.py


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("in_chans, size", [(1, 8), (3, 16)])
def test_every_preset_builds_and_classifies(name, in_chans, size):
    torch.manual_seed(0)
    model = create_model(_small(name), num_classes=7, in_chans=in_chans, image_size=size).eval()
    x = torch.randn(3, in_chans, size, size)
    with torch.no_grad():
        out = model(x)
        split = model.forward_head(model.forward_features(x))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    torch.testing.assert_close(out, split, rtol=0, atol=0)
    assert isinstance(getattr(model, HEAD), nn.Linear) and getattr(model, HEAD).out_features == 7


@pytest.mark.parametrize("name", MODELS.names())
def test_presets_have_paper_targets(name):
    spec = MODELS.get(name)
    presets = target_presets(spec.family)
    assert "paper" in presets and set(presets["paper"]) == {"prune", "lora"}
    assert spec.lora_r > 0 and spec.lora_alpha > 0


def test_preset_sizes():
    assert arch_of(ModelConfig(name="resnet18")) == {"width": 64}
    assert arch_of(ModelConfig(name="resnet18-tiny")) == {"width": 32}
    assert arch_of(ModelConfig(name="vit-paper")) == {"width": 384, "depth": 12, "heads": 6, "patch_size": 4}
    assert arch_of(ModelConfig(name="vit-paper", depth=2)) == {"width": 384, "depth": 2, "heads": 6, "patch_size": 4}
    resnet = create_model(ModelConfig(name="resnet18-tiny", width=4), 10, 1, 8)
    assert resnet.conv1.out_channels == 4 and resnet.layer4[0].conv1.out_channels == 32
    assert resnet.head.in_features == 32
    r50 = create_model(ModelConfig(name="resnet50-tiny", width=4), 10, 1, 8)
    assert r50.head.in_features == 4 * 8 * 4  # last stage planes 32, Bottleneck expansion 4


def _convs(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["resnet18-tiny", "resnet50-tiny"])
def test_resnet_paper_selection(name):
    model = create_model(_small(name), 10, 1, 8)
    convs = _convs(model)
    prune = select_layers(model, "resnet", "paper", "prune")
    lora = select_layers(model, "resnet", "paper", "lora")
    assert prune == convs  # every Conv2d, the stem included
    assert "conv1" in prune and any(n.endswith("shortcut.0") for n in prune)
    # the authors' regex .*\.(conv1|conv2|conv3|fc): the convs inside the blocks, neither stem nor shortcuts
    assert lora == [n for n in convs if n != "conv1" and not n.endswith("shortcut.0")]
    assert all(n.startswith("layer") and ".conv" in n for n in lora)
    assert HEAD not in prune and HEAD not in lora
    with_shortcuts = select_layers(model, "resnet", "paper_shortcuts", "lora")
    assert with_shortcuts == [n for n in convs if n != "conv1"]
    assert select_layers(model, "resnet", "paper_shortcuts", "prune") == prune
    assert select_layers(model, "resnet", "blocks", "prune") == with_shortcuts


def test_vit_paper_selection():
    model = create_model(_small("vit-tiny", depth=3), 10, 1, 8)
    assert select_layers(model, "vit", "paper", "prune", depth=3) == ["blocks.2.attn.proj", HEAD]
    assert select_layers(model, "vit", "paper", "lora", depth=3) == ["blocks.2.attn.proj"]
    assert select_layers(model, "vit", "no_head", "prune", depth=3) == ["blocks.2.attn.proj"]
    # the authors' code: the same pruning, LoRA on the head alone
    assert select_layers(model, "vit", "authors_code", "prune", depth=3) == ["blocks.2.attn.proj", HEAD]
    assert select_layers(model, "vit", "authors_code", "lora", depth=3) == [HEAD]
    all_linears = select_layers(model, "vit", "all", "lora", depth=3)
    assert len(all_linears) == 3 * 4 and "blocks.0.attn.qkv" in all_linears and "blocks.1.mlp.fc2" in all_linears


def test_task_layers_use_the_configured_depth(tiny_data):
    data, splits = tiny_data
    cfg = resolve_config(load_config(overrides=["model.name=vit-tiny", "model.depth=2", "model.width=16",
                                                "model.heads=2", "data.image_size=8"]))
    model = create_model(cfg.model, 10, 1, 8)
    unlearn_task = UnlearnTask(data, splits, cfg)
    assert unlearn_task.layers(model, "prune") == ["blocks.1.attn.proj", HEAD]
    assert unlearn_task.layers(model, "lora") == ["blocks.1.attn.proj"]


def test_select_layers_with_regex_and_errors():
    model = create_model(_small("resnet18-tiny"), 10, 1, 8)
    assert select_layers(model, "resnet", r"layer1\.0\.conv\d", "prune") == ["layer1.0.conv1", "layer1.0.conv2"]
    assert select_layers(model, "resnet", HEAD, "prune") == [HEAD]


def test_select_layers_errors():
    model = create_model(_small("resnet18-tiny"), 10, 1, 8)
    with pytest.raises(UserError, match="selects no Conv2d/Linear layer"):
        select_layers(model, "resnet", "layer1", "prune")  # a container, not a conv
    with pytest.raises(UserError, match="selects no Conv2d/Linear layer"):
        select_layers(model, "resnet", "bn1", "prune")  # not a Conv2d/Linear
    with pytest.raises(UserError, match="neither a preset .* nor a valid regex"):
        select_layers(model, "resnet", "conv(", "prune")


def test_create_model_errors():
    with pytest.raises(UserError, match="not a multiple of model.patch_size 4"):
        create_model(_small("vit-tiny"), 10, 1, 10)
    with pytest.raises(UserError, match="model.width 30 is not a multiple of model.heads 4"):
        create_model(ModelConfig(name="vit-tiny", width=30, depth=1), 10, 1, 8)
    with pytest.raises(UserError, match="model 'resnet18-tiny' has no 'depth'"):
        create_model(ModelConfig(name="resnet18-tiny", depth=2), 10, 1, 8)
    with pytest.raises(UserError, match="unknown model 'resnet19'. Did you mean 'resnet18'.*Valid: llama-tiny, resnet18"):
        create_model(ModelConfig(name="resnet19"), 10, 1, 8)


def test_registry():
    reg = Registry("widget")
    reg.add("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"] and "beta" in reg
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("alpha", 3)
    with pytest.raises(UserError, match=r"^unknown widget 'alpah'. Did you mean 'alpha'\? Valid: alpha, beta\.$"):
        reg.get("alpah")
    with pytest.raises(UserError, match=r"^unknown widget 'zzz'. Valid: alpha, beta\.$"):
        reg.get("zzz")

"""pruning.mode=remove: channels really leave the network (ResNet and ViT), outputs keep their shape,
saved models load back, and `prunelora export` round-trips."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from conftest import TINY_OVERRIDES as TINY
from conftest import tiny_vit_config
from prunelora.api import load_module
from prunelora.cli import main
from prunelora.config import load_config
from prunelora.errors import UserError
from prunelora.methods import UnlearnTask
from prunelora.models import create_model
from prunelora.models.pruning import match_shapes, removal_roots, remove_channels
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.unlearn import unlearn_one


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet_channels_removed(tiny_data, trained_original, unlearn_task_layers):
    data, _ = tiny_data
    model = trained_original
    x = data.normalise(data.x_test[:4])
    before = _params(model)
    changed = remove_channels(model, unlearn_task_layers(model), 0.5, "head", torch.zeros(1, 1, 8, 8))
    assert model.conv1.out_channels == 2 and changed["conv1"] == [4, 2]  # width 4 -> 2
    assert model.head.out_features == 10 and "head" not in changed  # the head keeps every class
    assert _params(model) < 0.4 * before  # half the channels in and out: about a quarter of the weights
    with torch.no_grad():
        assert model(x).shape == (4, 10)


@pytest.fixture
def unlearn_task_layers(task):
    return lambda model: task.layers(model, "prune")


def test_vit_roots_and_removal():
    cfg = tiny_vit_config()
    model = create_model(cfg.model, 10, 1, 8)
    names = ["blocks.1.attn.proj", "blocks.0.mlp.fc2", "head"]
    assert removal_roots(model, names, "head") == ["blocks.1.attn.qkv", "blocks.0.mlp.fc1"]
    before, x = _params(model), torch.randn(3, 1, 8, 8)
    changed = remove_channels(model, names, 0.5, "head", torch.zeros(1, 1, 8, 8))
    attn = model.blocks[1].attn
    assert changed["blocks.1.attn.qkv"] == [48, 24] and attn.num_heads == 2 and attn.head_dim == 4
    assert changed["blocks.0.mlp.fc1"][1] == changed["blocks.0.mlp.fc1"][0] // 2
    assert model.blocks[0].attn.qkv.out_features == 48  # untargeted block untouched
    assert _params(model) < before
    with torch.no_grad():
        assert model(x).shape == (3, 10)


def test_match_shapes_loads_a_removed_model(tiny_data, trained_original, unlearn_task_layers):
    data, _ = tiny_data
    small = trained_original
    remove_channels(small, unlearn_task_layers(small), 0.5, "head", torch.zeros(1, 1, 8, 8))
    state = small.state_dict()
    fresh = create_model(resolve_config(load_config(overrides=["model.width=4"])).model, 10, 1, 8)
    assert match_shapes(fresh, state) > 0
    fresh.load_state_dict(state)
    x = data.normalise(data.x_test[:5])
    with torch.no_grad():
        assert torch.equal(small.eval()(x), fresh.eval()(x))


def test_prunelora_with_removal(tiny_cfg, tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    cfg = resolve_config(load_config(overrides=[*TINY, "pruning.mode=remove"]))
    original = copy.deepcopy(trained_original)
    model, record = unlearn_one("prunelora", trained_original, UnlearnTask(data, splits, cfg), cpu_ctx)
    assert record["params_after"] < 0.4 * record["params_before"] == 0.4 * _params(original)
    assert _params(model) == record["params_after"] and "pruned_rows" not in record
    assert not any("lora" in n for n, _ in model.named_modules())  # merged
    with torch.no_grad():
        assert model(data.normalise(data.x_test[:3])).shape == (3, 10)




def test_vit_prunelora_with_removal(vit_original, cpu_ctx):
    data, splits, original = vit_original
    cfg = tiny_vit_config("pruning.mode=remove", "pruning.targets=all", "lora.targets=all")
    model, record = unlearn_one("prunelora", original, UnlearnTask(data, splits, cfg), cpu_ctx)
    assert record["params_after"] < record["params_before"] and record["removed_layers"] > 0
    with torch.no_grad():
        assert model(data.normalise(data.x_test[:2])).shape == (2, 10)


def test_export_round_trip(tmp_path, tiny_overrides, capsys):
    run_dir, exported = tmp_path / "run", tmp_path / "prunelora.safetensors"
    assert main(["run", "--out", str(run_dir), "-q", *tiny_overrides, "methods=[prunelora]", "save_models=true",
                 "pruning.mode=remove"]) == 0
    capsys.readouterr()
    assert main(["export", "--run", str(run_dir), "--method", "prunelora", "--out", str(exported)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["channels_removed"] and exported.with_suffix(".yaml").is_file()
    saved, model = load_module(run_dir / "models" / "prunelora.safetensors"), load_module(exported)
    assert isinstance(model, nn.Module) and facts["params"] == _params(model) < 0.4 * _params(
        create_model(load_config(overrides=["model.width=4"]).model, 10, 1, 8))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(saved(x), model(x))
    assert main(["evaluate", "--checkpoint", str(exported), "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["RA"] > 0


def test_export_errors(tmp_path, tiny_overrides):
    with pytest.raises(UserError, match="is not a prunelora run directory"):
        main_raise(["export", "--run", str(tmp_path), "--method", "prunelora", "--out", str(tmp_path / "x.safetensors")])
    run_dir = tmp_path / "run"
    assert main(["run", "--out", str(run_dir), "-q", *tiny_overrides, "methods=[finetune]"]) == 0
    with pytest.raises(UserError, match="no saved model for 'finetune'.*save_models=true"):
        main_raise(["export", "--run", str(run_dir), "--method", "finetune", "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(UserError, match="pruning.forget_head_rows needs pruning.mode=mask"):
        load_config(overrides=["pruning.mode=remove", "pruning.forget_head_rows=keep"])


def main_raise(argv):
    from prunelora.api import export

    args = dict(zip(argv[1::2], argv[2::2]))
    return export(args["--run"], args["--method"], args["--out"])

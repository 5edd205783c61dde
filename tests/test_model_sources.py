"""Models from elsewhere: any timm architecture (`timm:<name>`) and a user's weights (`model.init`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prunelora.cli import main
from prunelora.config import ModelConfig, load_config
from prunelora.engine.context import Context
from prunelora.errors import UserError
from prunelora.metrics.evaluate import accuracy, predict
from prunelora.models import classifier_name, create_model, select_layers
from prunelora.workflows.experiment import prepare, resolve_config

TINY = ["data.image_size=8", "train.epochs=1", "unlearn.epochs=1", "threads=1", "-q"]


def test_timm_model_layers_exclude_its_classifier():
    model = create_model(ModelConfig(name="timm:test_resnet"), 10, 1, 8)
    assert classifier_name(model) == "fc"
    names = select_layers(model, "timm", "paper", "lora")
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert "fc" not in names and set(convs) <= set(names)


def test_unknown_timm_model():
    with pytest.raises(UserError, match="unknown timm model 'resnet_nope'"):
        create_model(ModelConfig(name="timm:resnet_nope"), 10, 1, 8)


def test_run_with_a_timm_model(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "model.name=timm:test_resnet", "methods=retrain,prunelora", *TINY]) == 0, (
        capsys.readouterr().err
    )
    runs = json.loads((out / "results.json").read_text())["runs"]
    info = next(r["info"] for r in runs if r["method"] == "prunelora")
    assert info["lora_layers"] > 0 and info["pruned_layers"] == info["lora_layers"]


@pytest.fixture(scope="module")
def tiny_weights():
    """A tiny model's state dict and the test accuracy it gives (the reference for loading it back)."""
    cfg = resolve_config(load_config(overrides=["model.width=4", "data.image_size=8"]))
    torch.manual_seed(0)
    model = create_model(cfg.model, 10, 1, 8).eval()
    data, splits = prepare(cfg)
    test_acc = accuracy(predict(model, data, data.x_test, Context(torch.device("cpu"))), data.y_test.numpy())
    return model.state_dict(), test_acc, splits


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_run_starts_from_model_init(tmp_path, tiny_weights, suffix, capsys):
    state, _, _ = tiny_weights
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    out = tmp_path / "out"
    argv = ["run", "--out", str(out), "model.width=4", f"model.init={path}", "methods=finetune", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    original = results["runs"][0]
    assert original["info"]["loaded_from"] == str(path) and original["metrics"]["time_s"] == 0.0
    model = create_model(load_config(overrides=["model.width=4"]).model, 10, 1, 8)
    model.load_state_dict(state)
    cfg = resolve_config(load_config(overrides=["model.width=4", "data.image_size=8"]))
    data, splits = prepare(cfg)
    logits = predict(model, data, data.x_test, Context(torch.device("cpu")))
    ta = accuracy(logits[splits.test_retain.numpy()], data.y_test.numpy()[splits.test_retain.numpy()])
    assert original["metrics"]["TA"] == pytest.approx(ta)


class _Exploit:
    def __reduce__(self):
        return (np.save, ("owned.npy", np.zeros(1)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: torch.save({"x": _Exploit()}, p), "weights_only=True"),
        (lambda p: torch.save({"conv1.weight": torch.zeros(1)}, p), "does not match"),
        (lambda p: torch.save([torch.zeros(1)], p), "does not hold a state dict"),
        (lambda p: p.write_text("not a checkpoint"), "weights_only=True"),
    ],
    ids=["code-in-pickle", "wrong-shapes", "not-a-dict", "garbage"],
)
def test_bad_model_init_is_one_clear_error(tmp_path, capsys, make, message):
    path = tmp_path / "weights.pt"
    make(path)
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "model.width=4", f"model.init={path}", *TINY]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists() and not (tmp_path / "owned.npy").exists()


def test_checkpoint_from_an_older_config_still_loads(tmp_path, tiny_weights):
    """A checkpoint whose saved config predates newer keys (model.init, model.pretrained) is still accepted."""
    from prunelora.api import evaluate_checkpoint
    from prunelora.config import to_dict
    from prunelora.store.checkpoints import save_checkpoint

    state, _, _ = tiny_weights
    cfg = to_dict(resolve_config(load_config(overrides=["model.width=4", "data.image_size=8", "threads=1"])))
    for key in ("init", "pretrained"):
        del cfg["model"][key]
    model = create_model(ModelConfig(name="resnet18-tiny", width=4), 10, 1, 8)
    model.load_state_dict(state)
    save_checkpoint(tmp_path / "old.safetensors", model, cfg)
    metrics = evaluate_checkpoint(tmp_path / "old.safetensors")
    assert 0.0 <= metrics["TA"] <= 100.0
    with pytest.raises(UserError, match="fixes the model settings"):
        evaluate_checkpoint(tmp_path / "old.safetensors", ["model.width=8"])

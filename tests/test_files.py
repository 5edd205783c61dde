"""Checkpoints (safetensors with the config inside), atomic writes and the environment record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from prunelora.checkpoints import FORMAT, load_weights, read_checkpoint, save_checkpoint
from prunelora.environment import environment
from prunelora.errors import UserError
from prunelora.files import atomic_write


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_checkpoint_round_trip(tmp_path):
    model = _net()
    config = {"seed": 3, "model": {"name": "x", "width": 4}}
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(path, model, config, {"role": "original"})
    state, cfg, extra = read_checkpoint(path)
    assert cfg == config and extra == {"role": "original"}
    assert state.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT
    assert yaml.safe_load(path.with_suffix(".yaml").read_text()) == config
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors", "model.yaml"]  # no temp files

    fresh = load_weights(_net(seed=1), state, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")
    text = tmp_path / "x.safetensors"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        read_checkpoint(text)
    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign), metadata={"format": "other"})
    with pytest.raises(UserError, match="not written by prunelora"):
        read_checkpoint(foreign)


def test_load_weights_names_the_mismatch(tmp_path):
    state = _net().state_dict()
    state["2.weight"] = torch.zeros(5, 4)
    del state["0.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"missing: 0\.bias; unexpected: extra; wrong shape: 2\.weight"):
        load_weights(_net(), state, "ckpt")


def test_atomic_write(tmp_path):
    path = tmp_path / "a" / "b.json"
    atomic_write(path, json.dumps({"x": 1}))
    atomic_write(path, b"{\"x\": 2}")
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_atomic_write_with_a_writer_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "c.bin"
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"whole"))

    def fail(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["c.bin"]


def test_environment_record():
    env = environment(torch.device("cpu"), "kind")
    assert env["device"] == "cpu" and env["memory_measure"] == "kind"
    assert env["threads"] == torch.get_num_threads() and env["versions"]["torch"] == torch.__version__.split("+")[0]
    json.dumps(env)  # serialisable


def test_environment_names_the_source_tree_version_when_not_installed(monkeypatch):
    import prunelora
    from prunelora import environment as env_module

    def missing(package):
        raise env_module.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(env_module.metadata, "version", missing)
    versions = environment(torch.device("cpu"), "kind")["versions"]
    assert versions["prunelora"] == f"{prunelora.__version__} (source tree)" and versions["torch"] is None

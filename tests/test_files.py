"""Checkpoints (safetensors with the config inside), atomic writes with the user's umask, strict JSON, the checks of
where a command writes, and the environment record."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from prunelora.errors import UserError
from prunelora.store.checkpoints import FORMAT, load_weights, read_checkpoint, save_checkpoint
from prunelora.store.environment import environment
from prunelora.store.files import atomic_write, check_out_dir, check_out_file, finite, inside, same_path, to_json


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
    from prunelora.store import environment as env_module

    def missing(package):
        raise env_module.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(env_module.metadata, "version", missing)
    versions = environment(torch.device("cpu"), "kind")["versions"]
    assert versions["prunelora"] == f"{prunelora.__version__} (source tree)" and versions["torch"] is None


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path, mask):
    """Files (text, a writer's, a checkpoint and its YAML) get 0666 less the umask, as a file written in place would
    (0644 under the usual 022), not mkstemp's 0600; so do the folders made for them."""
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "a" / "x.json", "{}")
        atomic_write(tmp_path / "a" / "y.bin", lambda p: Path(p).write_bytes(b"1"))
        save_checkpoint(tmp_path / "c" / "model.safetensors", _net(), {"seed": 0})
    finally:
        os.umask(old)
    files = [tmp_path / "a" / "x.json", tmp_path / "a" / "y.bin", tmp_path / "c" / "model.safetensors",
             tmp_path / "c" / "model.yaml"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~mask for p in files}
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o777 & ~mask


def test_non_finite_numbers_become_null_with_their_reason():
    value = {"UA": 100.0, "forget_TA": math.nan, "KL": math.inf, "history": [{"loss": -math.inf}, 1.5]}
    written = json.loads(to_json(value))
    assert written["UA"] == 100.0 and written["forget_TA"] is None and written["KL"] is None
    assert written["nulls"] == {"forget_TA": "not a number: undefined here (e.g. an accuracy over no samples)",
                                "KL": "infinite"}
    assert written["history"] == [{"loss": None, "nulls": {"loss": "minus infinite"}}, 1.5]
    assert finite(finite(value)) == finite(value)  # cleaning twice keeps the reasons
    assert finite({"a": [math.nan]}) == {"a": [None]}


def test_out_checks(tmp_path):
    check_out_dir(tmp_path / "new" / "deeper")  # missing folders are fine: they are created
    assert not (tmp_path / "new").exists()  # ... when writing, not when checking
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"^--out '{blocker}' is a file; pass a directory"):
        check_out_dir(blocker)
    with pytest.raises(UserError, match=f"cannot be created: '{blocker}' is a file; pass another path$"):
        check_out_dir(blocker / "sub" / "run")
    with pytest.raises(UserError, match="has a name of 300 bytes; this file system takes at most 255"):
        check_out_dir(tmp_path / ("x" * 300) / "run")
    with pytest.raises(UserError, match="has a name of 300 bytes"):
        check_out_file(tmp_path / ("y" * 295 + ".json"))
    with pytest.raises(UserError, match=f"^--out '{tmp_path}' is a directory; pass a file name$"):
        check_out_file(tmp_path)
    check_out_file(tmp_path / "m" / "metrics.json")


def test_unwritable_out(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        target = folder if os.geteuid() != 0 else Path("/sys/kernel")  # modes do not stop root; /sys does
        try:
            with tempfile.TemporaryFile(dir=target):
                pytest.skip(f"'{target}' takes this process's writes")
        except OSError as err:
            reason = err.strerror
        with pytest.raises(UserError, match=rf"^--out '{target}/run' cannot be written: '{target}' \({reason}\); "
                                            "pass a folder you can write to$"):
            check_out_dir(target / "run")
    finally:
        folder.chmod(0o755)


def test_same_path_and_inside(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert same_path(tmp_path / "link" / "x", tmp_path / "a" / "x") and same_path(tmp_path / "a" / ".." / "a", tmp_path / "a")
    assert inside(tmp_path / "link" / "x", tmp_path / "a") and not inside(tmp_path / "ab", tmp_path / "a")

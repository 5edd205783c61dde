"""The model cache: keys, hits and misses, a corrupted entry, and identical results from a cached run."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from safetensors.torch import save_file

from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.metrics.catalog import METRICS
from prunelora.store import cache
from prunelora.workflows.experiment import resolve_config, train_original
from prunelora.workflows.run import run


@pytest.fixture
def cache_here(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELORA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_covers_what_determines_the_model(tiny_cfg, tiny_data):
    data, _ = tiny_data
    index = torch.arange(10)
    ctx = Context(torch.device("cpu"), progress=False)
    key, described = cache.model_key("original", tiny_cfg, 0, index, ctx, data)
    assert key == cache.model_key("original", tiny_cfg, 0, torch.arange(10), ctx, data)[0]
    other_train = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, lr=0.05))
    for changed in (cache.model_key("original", tiny_cfg, 1, index, ctx, data),
                    cache.model_key("retrain", tiny_cfg, 0, index, ctx, data),
                    cache.model_key("original", tiny_cfg, 0, torch.arange(9), ctx, data),
                    cache.model_key("original", other_train, 0, index, ctx, data)):
        assert changed[0] != key
    no_download = dataclasses.replace(tiny_cfg, data=dataclasses.replace(tiny_cfg.data, download=True))
    assert cache.model_key("original", no_download, 0, index, ctx, data)[0] == key  # downloading changes no data
    assert '"seed": 0' in described


def test_key_covers_the_content_of_the_data(tiny_cfg, tiny_data):
    """One pixel of one test image changed (an image replaced under the same file name): another key; the same
    content in another object: the same key."""
    data, _ = tiny_data
    index, ctx = torch.arange(10), Context(torch.device("cpu"), progress=False)
    key = cache.model_key("original", tiny_cfg, 0, index, ctx, data)[0]
    same = dataclasses.replace(data, x_train=data.x_train.clone())
    assert cache.model_key("original", tiny_cfg, 0, index, ctx, same)[0] == key
    for field in ("x_train", "x_test", "y_train"):
        tensor = getattr(data, field).clone()
        tensor.view(-1)[-1] = (tensor.view(-1)[-1] + 1) % (255 if field.startswith("x") else data.num_classes)
        changed = dataclasses.replace(data, **{field: tensor})
        assert cache.model_key("original", tiny_cfg, 0, index, ctx, changed)[0] != key, field


def test_key_covers_how_training_ran(tiny_cfg, tiny_data, monkeypatch):
    data, _ = tiny_data
    index = torch.arange(10)
    cpu = Context(torch.device("cpu"), progress=False)
    key = cache.model_key("original", tiny_cfg, 0, index, cpu, data)[0]
    assert cache.model_key("original", tiny_cfg, 0, index, dataclasses.replace(cpu, compile=True), data)[0] != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert cache.model_key("original", tiny_cfg, 0, index, cpu, data)[0] != key
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cache.model_key("original", tiny_cfg, 0, index, cpu, data)[0] != key
    monkeypatch.delenv("WORLD_SIZE")
    # a GPU run (described without touching a GPU): device type, autocast and memory format enter the key
    gpu = {"device": torch.device("cuda"), "amp": True, "channels_last": True, "compile": False, "graphs": True}
    assert cache.execution(types.SimpleNamespace(**gpu)) == {"device": "cuda", "amp": True, "channels_last": True,
                                                             "compile": False, "processes": 1, "cuda_graphs": True}
    assert cache.execution(types.SimpleNamespace(**{**gpu, "graphs": False}))["cuda_graphs"] is False
    assert cache.execution(cpu) == {"device": "cpu", "amp": False, "channels_last": False, "compile": False,
                                    "processes": 1, "threads": threads, "small_map_convs": False}
    small = dataclasses.replace(cpu, small_maps=True)  # a CPU run's convolutions over small maps enter the key
    assert cache.model_key("original", tiny_cfg, 0, index, small, data)[0] != key


def test_miss_then_hit(cache_here, tiny_cfg, tiny_data):
    data, _ = tiny_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    first, record = train_original(tiny_cfg, data, ctx)
    assert "cached" not in record and len(list(cache_here.glob("original-*.safetensors"))) == 1
    second, again = train_original(tiny_cfg, data, ctx)
    assert again["cached"] and again["time_s"] == pytest.approx(record["time_s"])
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    off = dataclasses.replace(tiny_cfg, cache=False)
    assert "cached" not in train_original(off, data, ctx)[1]


def test_a_file_with_another_key_is_not_used(cache_here, tiny_cfg, tiny_data):
    data, _ = tiny_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    model, _ = train_original(tiny_cfg, data, ctx)
    (path,) = cache_here.glob("original-*.safetensors")
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"key": "0" * 64, "record": "{}"})  # same name, wrong hash
    reloaded, record = train_original(tiny_cfg, data, ctx)
    assert "cached" not in record  # retrained, not the zeros
    assert any(v.abs().sum() > 0 for v in reloaded.state_dict().values())
    path.write_bytes(b"not a safetensors file")
    assert "cached" not in train_original(tiny_cfg, data, ctx)[1]


def test_cache_can_be_turned_off(tmp_path, monkeypatch, tiny_cfg, tiny_data):
    monkeypatch.setenv("PRUNELORA_CACHE", "off")
    data, _ = tiny_data
    assert "cached" not in train_original(tiny_cfg, data, Context(torch.device("cpu"), seed=0, progress=False))[1]
    assert cache.cache_dir() is None

COST = {m.key for m in METRICS if m.cost}  # seconds and memory: a cached model's are those recorded when it trained


def test_a_cached_run_gives_identical_metrics(cache_here, tiny_overrides):
    cfg = load_config(overrides=[*tiny_overrides, "methods=[retrain,finetune]"])
    first = run(cfg, progress=False, log=lambda *a: None)
    second = run(cfg, progress=False, log=lambda *a: None)
    assert [r["info"].get("cached") for r in second["runs"]] == [True, True, None]
    for a, b in zip(first["runs"], second["runs"]):
        quality = {k: v for k, v in a["metrics"].items() if k not in COST}
        assert quality == {k: b["metrics"][k] for k in quality}, a["method"]
    assert resolve_config(cfg).cache


def test_a_cached_retrain_keeps_its_loop_seconds_or_has_none(monkeypatch, task, cpu_ctx, trained_original):
    """A retrain from the cache reports the loop and one-off seconds recorded when it trained; an entry stored before
    they were recorded has neither, not a one-off time equal to its whole training."""
    from prunelora.methods import retrain as retrain_module
    from prunelora.metrics.scoring import combine_metrics
    from prunelora.workflows.unlearn import unlearn_one

    monkeypatch.setattr(task.config, "cache", True)
    for stored, loop, once in [({"time_s": 30.0, "loop_s": 28.0, "peak_memory_mb": 1.0}, 28.0 / 8, 2.0),
                               ({"time_s": 30.0, "peak_memory_mb": 1.0}, None, None)]:
        monkeypatch.setattr(retrain_module.cache, "load", lambda role, key, model, r=stored: {**r, "cached": True})
        _, record = unlearn_one("retrain", trained_original, task, cpu_ctx)
        metrics = combine_metrics({}, {**record, "epochs": 8})
        assert metrics["time_s"] == 30.0 and metrics["loop_s_per_epoch"] == loop and metrics["one_off_s"] == once

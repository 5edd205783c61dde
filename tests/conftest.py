"""Shared fixtures: a tiny configuration that trains in about a second on a CPU, its data, the task a method gets,
and trained originals (the tiny ResNet, and a tiny ViT for the tests of ViT presets)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile

import pytest
import torch

from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.methods import UnlearnTask
from prunelora.workflows.experiment import prepare, resolve_config, train_original

# ResNet-18 of width 4 on 8x8 digits, one epoch everywhere, one thread: the whole pipeline in seconds
# (learning curves on, so that every run also draws them).
TINY_OVERRIDES = ["data.name=digits", "model.width=4", "data.image_size=8", "train.epochs=1", "unlearn.epochs=1",
                  "threads=1", "eval.curves=true"]
# a ViT of two blocks, width 16, two heads in place of the ResNet
VIT_OVERRIDES = ["model.name=vit-tiny", "model.width=16", "model.depth=2", "model.heads=2"]


def tiny_vit_config(*extra: str):
    """The tiny configuration with the tiny ViT, plus `extra` overrides, resolved."""
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model.")]
    return resolve_config(load_config(overrides=[*overrides, *VIT_OVERRIDES, *extra]))


_CACHE_DIR = pytest.StashKey[str]()


def pytest_configure(config):
    # tiny models: one thread is faster than several (no synchronisation cost), and it matches threads=1
    torch.set_num_threads(1)
    # models cached by tests stay in a throw-away directory, never the user's cache (removed in pytest_unconfigure)
    config.stash[_CACHE_DIR] = os.environ["PRUNELORA_CACHE"] = tempfile.mkdtemp(prefix="prunelora-test-cache-")


def pytest_unconfigure(config):
    cache_dir = config.stash.get(_CACHE_DIR, None)
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_overrides() -> tuple[str, ...]:
    return tuple(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_cfg():
    """The resolved tiny configuration (preset values filled in)."""
    return resolve_config(load_config(overrides=TINY_OVERRIDES))


@pytest.fixture(scope="session")
def tiny_data(tiny_cfg):
    """(ImageData, Splits) of the tiny configuration: 8x8 digits, class 3 forgotten."""
    return prepare(tiny_cfg)


@pytest.fixture
def cpu_ctx() -> Context:
    return Context(torch.device("cpu"), seed=0, progress=False)


@pytest.fixture
def task(tiny_cfg, tiny_data) -> UnlearnTask:
    """What a method gets on the tiny configuration: data, splits, resolved config."""
    data, splits = tiny_data
    return UnlearnTask(data, splits, tiny_cfg)


@pytest.fixture(scope="session")
def _trained_original(tiny_cfg, tiny_data):
    data, _ = tiny_data
    model, record = train_original(tiny_cfg, data, Context(torch.device("cpu"), seed=0, progress=False))
    return model.eval(), record


@pytest.fixture
def trained_original(_trained_original):
    """A fresh copy of the original model trained once per session on the tiny configuration."""
    return copy.deepcopy(_trained_original[0])


@pytest.fixture(scope="session")
def trained_record(_trained_original):
    return _trained_original[1]


@pytest.fixture(scope="session")
def _vit_original():
    cfg = tiny_vit_config()
    data, splits = prepare(cfg)
    model, _ = train_original(cfg, data, Context(torch.device("cpu"), seed=0, progress=False))
    return data, splits, model.eval()


@pytest.fixture
def vit_original(_vit_original):
    """(data, splits, a fresh copy of the tiny ViT's original), trained once per session. A test may run it with
    other pruning / lora settings (`tiny_vit_config(...)`): those do not change the original."""
    data, splits, model = _vit_original
    return data, splits, copy.deepcopy(model)


@pytest.fixture(scope="session")
def checkpoint(tiny_cfg, tmp_path_factory):
    """A checkpoint written by `prunelora.train` for the tiny configuration (treat as read-only)."""
    from prunelora.api import train

    out = tmp_path_factory.mktemp("checkpoint") / "original"
    train(load_config(overrides=TINY_OVERRIDES), out, progress=False)
    return out / "model.safetensors"

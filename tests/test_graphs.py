"""CUDA-graph training steps: which steps qualify, and the bookkeeping of a recorded step, checked on the CPU.

The CPU has no graphs, so `torch.cuda`'s graph API is replaced by stand-ins with a graph's contract: recording
runs the step once (a real recording only records it), and every replay writes the step's figures and
gradients into the same tensors the recording made. Training must then give the eager path's numbers exactly.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY_OVERRIDES
from prunelora.config import load_config
from prunelora.engine import graphs
from prunelora.engine.context import Context
from prunelora.engine.loop import TrainingLoop
from prunelora.methods import UnlearnTask
from prunelora.models import create_model
from prunelora.workflows.experiment import make_context, prepare
from prunelora.workflows.resolve import resolve_config
from prunelora.workflows.unlearn import unlearn_one


def tiny_config(*extra: str):
    return resolve_config(load_config(overrides=[*TINY_OVERRIDES, *extra]))


class _Stream:
    def wait_stream(self, other):
        pass


class _Graph:
    """Replays by running the recorded step again, then writing its results into the recorded tensors."""

    step: graphs.GraphedStep

    def replay(self):
        before = [p.grad for p in self.step.params]  # a replay writes memory; it never rebinds .grad
        out = self.step.body()
        self.step.out.copy_(out)
        for p, g, kept in zip(self.step.params, self.step.grads, before):
            if g is not None:
                g.copy_(p.grad)
            p.grad = kept


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Graphs on the CPU with the stand-ins; counts recordings and replays."""
    counts = {"record": 0, "replay": 0}
    recording = {}

    @contextlib.contextmanager
    def graph(g):
        recording["graph"] = g
        yield

    original_record = graphs.GraphedStep._record

    def record(self):
        counts["record"] += 1
        original_record(self)
        self.graph.step = self

    def replay(self):
        counts["replay"] += 1
        _Graph.replay(self)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", type("G", (), {"replay": replay}))
    monkeypatch.setattr(graphs.GraphedStep, "_record", record)
    return counts


def _train(method: str, cfg, graphed: bool, monkeypatch) -> tuple[list[float], dict]:
    ok = TrainingLoop.graph_ok
    monkeypatch.setattr(TrainingLoop, "graph_ok", (lambda self, plain: plain) if graphed else (lambda self, plain: False))
    ctx = make_context(cfg, progress=False)
    data, splits = prepare(cfg)
    torch.manual_seed(0)
    model = create_model(cfg.model, len(data.classes), data.in_chans, data.image_size)
    out, record = unlearn_one(method, model, UnlearnTask(data, splits, cfg), ctx)
    monkeypatch.setattr(TrainingLoop, "graph_ok", ok)
    return [h["loss"] for h in record["history"]], {k: v.clone() for k, v in out.state_dict().items()}


@pytest.mark.parametrize("method", ["finetune", "prunelora"])
def test_replayed_steps_train_exactly_as_eager_steps(method, cpu_graphs, monkeypatch):
    # batches of 64 over the retain set leave a short last batch: eager steps between replays, every epoch
    cfg = tiny_config("unlearn.epochs=2", "unlearn.batch_size=64", "lora.dropout=0", "eval.curves=false")
    eager_loss, eager_state = _train(method, cfg, False, monkeypatch)
    assert cpu_graphs == {"record": 0, "replay": 0}
    graph_loss, graph_state = _train(method, cfg, True, monkeypatch)
    n_retain = len(prepare(cfg)[1].retain)
    full = n_retain // 64
    assert n_retain % 64 != 0  # the test needs the short batch
    assert cpu_graphs == {"record": 1, "replay": 2 * full - graphs.WARMUP_STEPS}
    assert graph_loss == eager_loss
    for key, value in eager_state.items():
        assert torch.equal(graph_state[key], value), key


def _loop(**changes) -> TrainingLoop:
    loop = object.__new__(TrainingLoop)
    cuda = torch.device("cuda")
    loop.ctx = SimpleNamespace(graphs=True, device=cuda, compile=False)
    loop.data = SimpleNamespace(augment="flip", x_train=SimpleNamespace(device=cuda))
    loop.recipe = SimpleNamespace(augment=False)
    loop.mix_rng, loop.world = None, SimpleNamespace(active=False)
    for name, value in changes.items():
        obj, attr = name.split("__") if "__" in name else (None, name)
        setattr(getattr(loop, obj) if obj else loop, attr, value)
    return loop


def test_only_steps_of_fixed_work_on_one_gpu_are_graphed():
    assert _loop().graph_ok(plain=True)
    assert not _loop().graph_ok(plain=False)  # a method's own objective
    assert not _loop(recipe__augment=True).graph_ok(plain=True)  # random crops / flips drawn on the host
    assert _loop(recipe__augment=True, data__augment="none").graph_ok(plain=True)
    assert not _loop(mix_rng=object()).graph_ok(plain=True)  # MixUp's lambda changes every step
    assert not _loop(world=SimpleNamespace(active=True)).graph_ok(plain=True)  # DDP
    assert not _loop(ctx=SimpleNamespace(graphs=False, device=torch.device("cuda"), compile=False)).graph_ok(plain=True)
    assert not _loop(ctx=SimpleNamespace(graphs=True, device=torch.device("cuda"), compile=True)).graph_ok(plain=True)
    assert not _loop(data__x_train=SimpleNamespace(device=torch.device("cpu"))).graph_ok(plain=True)


def test_graphs_are_never_on_for_the_cpu():
    assert Context(torch.device("cpu"), graphs=True).graphs is False
    assert Context(torch.device("cpu")).graphs is False
    cfg = tiny_config("cuda_graphs=true")
    assert cfg.cuda_graphs is True and make_context(cfg, progress=False).graphs is False

"""The GPU benchmark script runs end to end (here on the CPU, on a tiny model) and prints every row and check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_the_cpu(tmp_path):
    record = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--n-train", "96",
           "--models", "resnet50-tiny", "--json", str(record), "threads=1", "model.width=4"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = dict(re.findall(r"^  (\S+(?: \(1 epoch\))?)\s+([\d.]+)\s+\d+\s+\d+$", out.stdout, re.MULTILINE))
    assert set(rows) == {"train (1 epoch)", "finetune", "prune_finetune", "lora", "prunelora", "prunelora_remove"}
    assert all(float(seconds) > 0 for seconds in rows.values())
    checks = re.findall(r"^(PASS|MISS)  (.+): ", out.stdout, re.MULTILINE)
    assert [label for _, label in checks] == [
        "resnet50-tiny: Fine-tune >= 12000 images/s",
        "resnet50-tiny: PruneLoRA epoch <= 0.9 x Fine-tune's",
        "resnet50-tiny: PruneLoRA peak memory <= 0.8 x Fine-tune's",
        "resnet50-tiny: PruneLoRA >= 13000 images/s",
        "resnet50-tiny: PruneLoRA (channels removed) epoch <= 0.9 x Fine-tune's",
        "resnet50-tiny: PruneLoRA (channels removed) peak memory <= 0.8 x Fine-tune's",
        "resnet50-tiny: PruneLoRA (channels removed) >= 13000 images/s",
    ]
    saved = json.loads(record.read_text())
    # each check's value is the ratio / rate of the measured rows, not a figure of its own
    values = dict(re.findall(r"^(?:PASS|MISS)  (.+): ([\d.]+)x?$", out.stdout, re.MULTILINE))
    fig = saved["figures"]["resnet50-tiny"]
    ft, pl = fig["finetune"], fig["prunelora"]
    assert float(values["resnet50-tiny: PruneLoRA epoch <= 0.9 x Fine-tune's"]) == pytest.approx(
        pl["seconds_per_epoch"] / ft["seconds_per_epoch"], abs=0.006)
    assert float(values["resnet50-tiny: PruneLoRA peak memory <= 0.8 x Fine-tune's"]) == pytest.approx(
        pl["peak_memory_mb"] / ft["peak_memory_mb"], abs=0.006)
    assert float(values["resnet50-tiny: Fine-tune >= 12000 images/s"]) == pytest.approx(ft["images_per_s"], abs=0.6)
    rm = fig["prunelora_remove"]
    assert float(values["resnet50-tiny: PruneLoRA (channels removed) peak memory <= 0.8 x Fine-tune's"]) == pytest.approx(
        rm["peak_memory_mb"] / ft["peak_memory_mb"], abs=0.006)
    assert float(values["resnet50-tiny: PruneLoRA (channels removed) >= 13000 images/s"]) == pytest.approx(
        rm["images_per_s"], abs=0.6)
    assert saved["environment"]["device"] == "cpu" and saved["environment"]["versions"]["torch"]
    steps = saved["figures"]["resnet50-tiny"]
    assert set(steps) == set(rows)
    assert steps["finetune"]["seconds_per_epoch"] == pytest.approx(float(rows["finetune"]), abs=0.006)
    assert [c["target"] for c in saved["checks"]] == [label for _, label in checks]



def test_step_work_counts_what_an_adapted_layer_adds(tmp_path):
    """ResNet-50 (width 8): each of the 48 adapted block convolutions adds one dropout draw and at most two
    more passes each way (the mask rebuilt and applied to the gradient, the add and the gradient sum);
    the scale and the mask's compare-and-multiply are gone (they were 7 more passes per layer)."""
    record = tmp_path / "passes.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_work.py"), "--model", "resnet50-tiny", "--json",
           str(record), "threads=1"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    fig = json.loads(record.read_text())["figures"]
    ft, pl = fig["finetune"]["by_operator"], fig["prunelora"]["by_operator"]
    extra = {k: pl.get(k, 0) - ft.get(k, 0) for k in set(ft) | set(pl)}
    assert extra["native_dropout"] == 48
    assert extra["native_dropout_backward"] <= 2 * 48 and extra["add"] <= 2 * 48
    assert all(extra.get(k, 0) == 0 for k in ("mul", "mul_", "rand_like", "ge"))
    assert fig["prunelora"]["other_calls"] - fig["finetune"]["other_calls"] <= 5 * 48
    assert fig["prunelora"]["convolution_calls"] > fig["finetune"]["convolution_calls"]
    assert fig["prunelora"]["other_mb_at_128"] > fig["finetune"]["other_mb_at_128"] > 0
    # channels removed: the same operators on half-width tensors, so fewer FLOPs and bytes than with masks
    removed = fig["prunelora_remove"]
    assert removed["convolution_calls"] == fig["prunelora"]["convolution_calls"]
    assert removed["gflop_at_128"] < 0.5 * fig["prunelora"]["gflop_at_128"]
    assert removed["other_mb_at_128"] < fig["prunelora"]["other_mb_at_128"]


def test_gpu_benchmark_notes_memory_around_each_graph_recording(monkeypatch):
    """The wrapper reads the allocator before and after the recording it wraps (here a stand-in that
    allocates 30 MB and peaks at 100 MB) and leaves the recording's own work untouched."""
    import importlib.util

    from prunelora.engine import graphs

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    mem = {"now": 20 * 2**20, "peak": 60 * 2**20}

    def recording(self):
        self.recorded = True
        mem["peak"], mem["now"] = 100 * 2**20, 50 * 2**20

    monkeypatch.setattr(graphs.GraphedStep, "_record", recording)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: mem["peak"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: mem["now"])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    gpu.watch_graph_memory()
    step = SimpleNamespace()
    graphs.GraphedStep._record(step)
    assert step.recorded and gpu.GRAPH_MEMORY == [{
        "peak_after_warmup_mb": 60.0, "allocated_before_recording_mb": 20.0,
        "peak_after_recording_mb": 100.0, "allocated_after_recording_mb": 50.0}]

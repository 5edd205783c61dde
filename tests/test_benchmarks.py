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


def _bench(name: str):
    """benchmarks/<name>.py, imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text_run():
    return _bench("text_run")


def test_text_run_arguments_and_pure_helpers():
    """The text-run benchmark's options, its time breakdown (evaluation = wall - the timed steps), the reference
    seconds, the Trainer's rows and collator (padding stripped, then padded to the batch's longest row) and the
    dense floor; no training."""
    tr = _text_run()
    args = tr.parse_args([])
    assert (args.epochs, args.threads, args.repeats, args.skip_run, args.out) == (3, 2, 2, False, None)
    args = tr.parse_args(["--epochs", "1", "--skip-run", "--out", "o", "--repeats", "1", "train.lr=0.001"])
    assert (args.epochs, args.skip_run, args.out, args.repeats, args.overrides) == (1, True, "o", 1, ["train.lr=0.001"])
    with pytest.raises(SystemExit):
        tr.parse_args(["--epochs", "0"])
    assert tr.reference_seconds(10.0, tr.REFERENCE_GFLOPS) == pytest.approx(10.0)
    assert tr.reference_seconds(10.0, tr.REFERENCE_GFLOPS / 2) == pytest.approx(5.0)
    results = {"runs": [
        {"method": "original", "metrics": {"time_s": 20.0, "loop_s_per_epoch": 2.0, "one_off_s": 4.0}},
        {"method": "retrain", "metrics": {"time_s": 15.0, "loop_s_per_epoch": 1.5, "one_off_s": 3.0}},
        {"method": "lora", "metrics": {"time_s": 5.0, "loop_s_per_epoch": 1.0, "one_off_s": 2.5}},
        {"method": "grad_ascent", "metrics": {}, "error": "diverged"},
    ]}
    b = tr.breakdown(results, 100.0)
    assert [r["part"] for r in b["rows"]] == ["training (original)", "training (retrain)", "lora", "grad_ascent"]
    assert b["steps_s"] == 40.0 and b["evaluation_s"] == 60.0 and b["rows"][3]["error"] == "diverged"
    assert [r["one_off_s"] for r in b["rows"]] == [4.0, 3.0, 2.5, None]
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    labels = torch.tensor([[-100, 6, 7, -100], [-100, 9, -100, -100]])
    rows = tr.Rows(ids, labels, pad_id=0)
    assert len(rows) == 2 and rows[1]["input_ids"].tolist() == [8, 9] and rows[1]["labels"].tolist() == [-100, 9]
    batch = tr.collate([rows[1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[8, 9]]  # cut to the batch's longest row
    batch = tr.collate([rows[0], rows[1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert tr.dense_floor(1000, 500, 3.0) == pytest.approx(6 * 1000 * 500 / 3e9)


def test_text_run_summary_shows_every_part():
    """The markdown summary of a full record (run + engine vs Trainer): each part, the totals and both verdicts."""
    tr = _text_run()
    run = tr.breakdown({"runs": [
        {"method": "original", "metrics": {"time_s": 20.0, "loop_s_per_epoch": 2.0, "one_off_s": 4.0}},
        {"method": "lora", "metrics": {"time_s": 5.0, "loop_s_per_epoch": None, "one_off_s": None}}]}, 100.0)
    run.update(matmul_gflops=311.5, reference_s=100.0)
    one = {"s_per_epoch": 2.0, "cpu_s_per_epoch": 3.0, "loss_mean": 1.5, "loss_last_epoch": 1.0}
    record = {
        "environment": {"cpu": "a CPU", "threads": 2, "torch": "t", "transformers": "x"},
        "matmul_gflops": {"before": 300.0, "after_run": 310.0}, "run": run,
        "engine_vs_trainer": {"epochs": 3, "repeats": 1, "rows": 10, "batch_size": 2, "params": 1000,
                              "tokens_per_epoch": 50, "dense_floor_s_per_epoch": 0.5, "ratio": 0.5,
                              "matmul_gflops_after_each": [300.0, 300.0],
                              "tries_s_per_epoch": {"ours": [2.0], "trainer": [4.0]}, "ours": one,
                              "trainer": {**one, "s_per_epoch": 4.0, "optim": "adamw_torch_fused",
                                          "schedule": tr.SCHEDULE}},
    }
    text = tr.summary(record)
    assert "| training (original) | 20.0 | 2.00 | 4.0 |" in text and "| lora | 5.0 | - | - |" in text
    assert "| evaluation (wall - the above) | 75.0 | | |" in text and "**100.0 reference s**" in text
    assert "target 150" in text and ": PASS" in text and "**0.50x** wall" in text


def _first_table():
    return _bench("first_table")


def test_first_table_floor_and_breakdown():
    """The first-table benchmark's arithmetic: the default's 2,100 steps (504 + 456 + 4 x 285) from its sizes, the
    floor at the mean matmul rate, evaluation as the metric parts only, and both verdicts."""
    ft = _first_table()
    methods = ["retrain", "finetune", "prune_finetune", "lora", "prunelora"]
    results = {"config": {"methods": methods, "train": {"epochs": 8, "batch_size": 128},
                          "unlearn": {"epochs": 5, "batch_size": 128}},
               "data": {"sizes": {"forget": 800, "retain": 7200, "test_retain": 1800, "test_forget": 200}},
               "runs": [{"method": m, "metrics": {"time_s": 20.0, "loop_s_per_epoch": 3.0, "one_off_s": 5.0}}
                        for m in ["original", *methods]]}
    steps = ft.default_steps(results)
    assert steps == {"original": 504, "retrain": 456, **{m: 285 for m in methods[1:]}}
    timers = ft.Timers()
    timers.seconds.update({"forward passes (train + test logits)": 6.0, "probe": 3.0, "writing results and reports": 1.0})
    timers.calls.update({"forward passes (train + test logits)": 6, "probe": 6, "writing results and reports": 1})
    record = ft.summarise(results, timers, run_s=138.0, start_up_s=2.0, before=190.0, after=210.0, flops=int(17.8e9))
    assert record["steps"] == 2100 and record["training_s"] == 120.0
    assert record["floor_s"] == pytest.approx(2100 * 17.8 / 200.0)
    assert record["wall_s"] == 140.0 and record["evaluation_s"] == 9.0 and record["rest_s"] == pytest.approx(8.0)
    assert record["evaluation_share"] == pytest.approx(9.0 / 140.0)
    text = ft.summary(record)
    assert "| training: lora | 285 | 20.0 | 3.00 | 5.0 |" in text and "| probe (6 calls) | | 3.0 | | |" in text
    assert "**0.75x** (target <= 1.3): PASS" in text and "**6.4%** of the run (target <= 15%): PASS" in text
    record = ft.summarise(results, timers, run_s=300.0, start_up_s=2.0, before=200.0, after=200.0, flops=int(17.8e9))
    assert "(target <= 1.3): MISS" in ft.summary(record)


def test_first_table_timers_time_what_they_wrap():
    """A wrapped function still returns its value; its seconds and calls land under its label, also when it raises."""
    ft = _first_table()
    timers = ft.Timers()
    module = SimpleNamespace(f=lambda x: x + 1, g=lambda: 1 / 0)
    timers.patch(module, "f", "f part")
    timers.patch(module, "g", "g part")
    assert module.f(1) == 2 and module.f(2) == 3
    with pytest.raises(ZeroDivisionError):
        module.g()
    assert timers.calls == {"f part": 2, "g part": 1} and timers.seconds["f part"] >= 0.0


def test_cap_isa_runs_the_script_again_with_the_kernels_kept_to_avx2(monkeypatch):
    """`--isa avx2` re-runs the script with its own arguments in a Python whose oneDNN, MKL and ATen kernels are
    kept to AVX2; once so kept (the re-run), or with no --isa, it goes on in this process."""
    throughput = _bench("throughput")
    calls = []
    monkeypatch.setattr(throughput.os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    for key in throughput.ISA_CAPS["avx2"]:
        monkeypatch.delenv(key, raising=False)
    throughput.cap_isa(None, "bench.py", ["--isa", "avx2"])
    assert calls == []
    throughput.cap_isa("avx2", "bench.py", ["--isa", "avx2", "seed=1"])
    (exe, args, env), = calls
    assert args == [exe, "bench.py", "--isa", "avx2", "seed=1"]
    assert {k: env[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")} == {
        "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    for key, value in throughput.ISA_CAPS["avx2"].items():
        monkeypatch.setenv(key, value)
    throughput.cap_isa("avx2", "bench.py", ["--isa", "avx2"])
    assert len(calls) == 1
    assert _first_table().parse_args(["--isa", "avx2"]).isa == "avx2"

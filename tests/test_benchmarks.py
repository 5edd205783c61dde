"""The GPU benchmark script runs end to end (here on the CPU, on a tiny model) and prints every row and check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
        "resnet50-tiny: PruneLoRA epoch <= 0.9 x Fine-tune's",
        "resnet50-tiny: PruneLoRA peak memory <= 0.8 x Fine-tune's",
        "resnet50-tiny: Fine-tune >= 12000 images/s",
        "resnet50-tiny: PruneLoRA >= 13000 images/s",
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
    assert saved["environment"]["device"] == "cpu" and saved["environment"]["versions"]["torch"]
    steps = saved["figures"]["resnet50-tiny"]
    assert set(steps) == set(rows)
    assert steps["finetune"]["seconds_per_epoch"] == pytest.approx(float(rows["finetune"]), abs=0.006)
    assert [c["target"] for c in saved["checks"]] == [label for _, label in checks]


"""Kill a run and start it again: it keeps what was done, runs the rest and ends with the same results;
a different config in the same directory is refused; the same config and seed give the same metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from prunelora.cli import main
from prunelora.config import load_config
from prunelora.errors import UserError
from prunelora.metrics.catalog import METRICS
from prunelora.workflows.run import run

SLOW_ENOUGH = ["unlearn.epochs=3", "methods=[retrain,finetune,prunelora,lora]"]
COST = {m.key for m in METRICS if m.cost}  # seconds and memory, which differ from run to run


def _quality(results: dict) -> dict:
    return {(r["method"], r["seed"]): {k: v for k, v in r["metrics"].items() if k not in COST}
            for r in results["runs"]}


def _cmd(out, tiny):
    return [sys.executable, "-m", "prunelora", "run", "--out", str(out), *tiny, *SLOW_ENOUGH]


def test_kill_and_resume(tmp_path, tiny_overrides):
    env = {**os.environ, "PRUNELORA_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out, tiny_overrides), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "progress" / "seed0-retrain.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "progress" / "seed0-retrain.json").exists() and not (out / "results.json").exists()
    resumed = subprocess.run(_cmd(out, tiny_overrides), check=False, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "retrain: done before" in resumed.stderr
    uninterrupted = tmp_path / "whole"
    whole = subprocess.run(_cmd(uninterrupted, tiny_overrides), check=False, env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0
    a = json.loads((out / "results.json").read_text())
    b = json.loads((uninterrupted / "results.json").read_text())
    assert _quality(a) == _quality(b)


def test_another_config_is_refused_unless_forced(tmp_path, tiny_overrides, capsys):
    out = str(tmp_path / "run")
    assert main(["run", "--out", out, "-q", *tiny_overrides, "methods=[finetune]"]) == 0
    assert main(["run", "--out", out, "-q", *tiny_overrides, "methods=[finetune]"]) == 0  # same config: all loaded
    capsys.readouterr()
    assert main(["run", "--out", out, "-q", *tiny_overrides, "methods=[finetune]", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another config (seed differs)" in err and "--force" in err
    assert main(["run", "--out", out, "-q", "--force", *tiny_overrides, "methods=[finetune]", "seed=1"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["runs"][0]["seed"] == 1


def test_a_run_from_another_set_up_is_refused_unless_forced(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "-q", *tiny_overrides, "methods=[finetune]"]) == 0
    setup = json.loads((out / "progress" / "setup.json").read_text())
    assert setup["device"] == "cpu" and setup["threads"] == 1 and setup["processes"] == 1 and setup["device_name"]
    (out / "progress" / "setup.json").write_text(json.dumps({**setup, "device_name": "Another CPU"}))
    capsys.readouterr()
    assert main(["run", "--out", str(out), "-q", *tiny_overrides, "methods=[finetune]"]) == 2
    err = capsys.readouterr().err
    assert "started on another set-up (device_name was Another CPU" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["run", "--out", str(out), "-q", "--force", *tiny_overrides, "methods=[finetune]"]) == 0
    assert json.loads((out / "progress" / "setup.json").read_text()) == setup


def test_same_config_and_seed_give_the_same_metrics(tiny_overrides):
    cfg = load_config(overrides=[*tiny_overrides, "cache=false", "methods=[retrain,finetune,prunelora,salun]"])
    first = run(cfg, progress=False, log=lambda *a: None)
    second = run(cfg, progress=False, log=lambda *a: None)
    assert _quality(first) == _quality(second)


def test_variant_names_cannot_leave_the_output_directory():
    from prunelora.workflows.experiment import resolve_config

    for name in ("../x", "a/b", ".hidden"):
        with pytest.raises(UserError, match="may use only letters, digits"):
            resolve_config(load_config(base={"variants": {name: {"method": "prunelora"}}, "methods": [name]}))


def test_a_sequence_resumes_from_the_request_it_stopped_in(tmp_path, tiny_overrides, monkeypatch):
    """Interrupted in request 2 (after request 1 and one method of request 2), a sequence run loads what was done,
    starts each method's request 2 from its saved request-1 model, and ends with an uninterrupted run's numbers."""
    from prunelora.workflows import run as runner

    overrides = [*tiny_overrides, "methods=[retrain,finetune,prunelora]", "forget.sequence=[[3],[5]]",
                 "forget.classes=null", "eval.curves=false", "eval.evidence=[]"]
    cfg = load_config(overrides=overrides)
    whole = run(cfg, tmp_path / "whole", progress=False, log=lambda *a: None)
    real, calls = runner._run_method, []

    def interrupted(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 5:  # request 2's finetune
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_method", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, progress=False, log=lambda *a: None)
    monkeypatch.setattr(runner, "_run_method", real)
    assert (out / "progress" / "seed0-request1-prunelora.safetensors").is_file()
    lines = []
    resumed = run(cfg, out, progress=False, log=lines.append)
    loaded = [line.split(":")[0].split()[-1] for line in lines if "done before" in line]
    assert loaded == ["retrain", "finetune", "prunelora", "retrain"]
    assert [(r["method"], r["step"]) for r in resumed["runs"]] == [(r["method"], r["step"]) for r in whole["runs"]]
    quality = lambda results: [{k: v for k, v in r["metrics"].items() if k not in COST}
                               for r in results["runs"]]
    assert quality(resumed) == quality(whole)

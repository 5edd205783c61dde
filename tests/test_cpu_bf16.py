"""cpu_bf16: bf16 autocast on a CPU that computes bf16 natively, opt-in; refused in one line where it is emulated."""

from __future__ import annotations

import pytest
import torch

from prunelora.cli import main
from prunelora.config import load_config
from prunelora.engine import context as context_module
from prunelora.engine.context import Context, native_bf16
from prunelora.store.cache import execution
from prunelora.workflows.run import run

CPU = torch.device("cpu")


class _Info:
    """Stands in for /proc/cpuinfo's Path."""

    text = ""

    def __init__(self, *args):
        pass

    def read_text(self):
        if self.text is None:
            raise OSError("no such file")
        return self.text


@pytest.mark.parametrize(("flags", "native"), [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4/5, Intel Cooper Lake
    ("fpu avx2 avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
    ("fpu avx2 avx512f avx512_vnni", False),  # AVX-512 without bf16
    ("fpu sse2 avx2 fma", False),
    (None, False),  # no /proc/cpuinfo
])
def test_native_bf16_reads_the_cpu_flags(monkeypatch, flags, native):
    info = type("Info", (_Info,), {"text": None if flags is None else f"processor\t: 0\nflags\t\t: {flags}\n"})
    monkeypatch.setattr(context_module, "Path", info)
    assert native_bf16() is native


def test_cpu_autocast_only_when_asked():
    plain = Context(CPU, amp=True, progress=False)  # amp is CUDA's: off on the CPU
    assert not plain.amp
    with plain.autocast():
        assert not torch.is_autocast_enabled("cpu")
    bf16 = Context(CPU, cpu_bf16=True, progress=False)
    assert bf16.amp and not bf16.graphs
    conv = torch.nn.Conv2d(1, 2, 3)
    with bf16.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert conv(torch.randn(1, 1, 5, 5)).dtype == torch.bfloat16
    assert execution(bf16)["amp"] and not execution(plain)["amp"]  # the model cache keeps them apart


def test_cpu_bf16_is_refused_on_a_cpu_without_it(monkeypatch, tiny_overrides, capsys, tmp_path):
    monkeypatch.setattr("prunelora.workflows.experiment.native_bf16", lambda: False)
    assert main(["run", "--out", str(tmp_path / "run"), "-q", *tiny_overrides, "cpu_bf16=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpu_bf16=true needs a CPU that computes bf16 natively" in err[0]
    assert "leave cpu_bf16=false" in err[0] and not (tmp_path / "run" / "results.json").exists()


def test_a_bf16_run_trains_and_differs_from_fp32(monkeypatch, tiny_overrides, tmp_path):
    """With cpu_bf16 the whole run (original, retrain, methods) trains under bf16 autocast: it finishes with
    metrics in range, and its numbers are not fp32's (bf16 rounds every convolution's inputs)."""
    monkeypatch.setattr("prunelora.workflows.experiment.native_bf16", lambda: True)  # emulated where not native
    monkeypatch.setenv("PRUNELORA_CACHE", str(tmp_path / "cache"))  # fp32's models cached, bf16's must not match
    overrides = [*tiny_overrides, "methods=[retrain,prunelora]"]
    fp32 = run(load_config(overrides=overrides), progress=False, log=lambda *a: None)
    bf16 = run(load_config(overrides=[*overrides, "cpu_bf16=true"]), progress=False, log=lambda *a: None)
    assert [r["info"].get("cached") for r in bf16["runs"]] == [None, None, None]  # not fp32's cached models
    for r in bf16["runs"]:
        assert 0.0 <= r["metrics"]["RA"] <= 100.0 and r["metrics"]["time_s"] > 0
    assert bf16["config"]["cpu_bf16"] and not fp32["config"]["cpu_bf16"]
    differ = [k for k in ("RA", "TA", "MIA_loss_balanced") for a, b in zip(fp32["runs"], bf16["runs"])
              if a["metrics"][k] != b["metrics"][k]]
    assert differ

"""`prunelora tune`: it never reads a test sample; diverged trials score WORST and the winner is the best
finished trial; an interrupted tune continues; the winner is a config `run` takes."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys

import pytest

from prunelora.config import load_config
from prunelora.errors import UserError
from prunelora.workflows import validation as V
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.tune import WORST, _optuna, tune
from test_validation import _cfg

# ---------------------------------------------------------------- prunelora tune


class Untouchable:
    """Stands for the test set: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")

    def __getitem__(self, item):
        raise AssertionError("the test split was read (indexed)")

    def __len__(self):
        raise AssertionError("the test split was read (len)")


def test_tune_never_reads_the_test_split(tmp_path, monkeypatch):
    """The data set's test images and labels are replaced by objects that fail on any use; the whole tune
    (validation original and retrain, trials with epoch selection, scoring, outputs) still runs."""
    real = V.load_dataset
    monkeypatch.setattr(V, "load_dataset", lambda config: dataclasses.replace(real(config), x_test=Untouchable(),
                                                                              y_test=Untouchable()))
    summary = tune(_cfg("eval.select=best"), "finetune", tmp_path / "t", trials=2, progress=False)
    assert summary["trials"] == 2 and len(summary["best"]["selected_epochs"]) == 1


def test_tuning_grad_ascent_picks_the_best_trial_that_did_not_diverge(tmp_path):
    """Gradient ascent on the tiny configuration, ten trials. Which rates diverge, and how far the forget set
    moves, depend on the CPU's arithmetic at this size; what holds on any CPU is the bookkeeping: a diverged
    trial scores WORST and is marked, and the winner is the finished trial with the lowest objective."""
    summary = tune(_cfg(), "grad_ascent", tmp_path / "t", trials=10, progress=False)
    rows = list(csv.DictReader((tmp_path / "t" / "trials.csv").open()))
    assert len(rows) == 10 and summary["diverged"] == sum(r["diverged"] == "True" for r in rows)
    assert all(float(r["objective"]) == WORST for r in rows if r["diverged"] == "True")
    finished = [r for r in rows if r["diverged"] == "False"]
    winner = min(finished, key=lambda r: float(r["objective"]))
    assert summary["best"]["trial"] == int(winner["trial"])
    assert summary["best"]["value"] == pytest.approx(float(winner["objective"])) and summary["best"]["value"] < WORST


def test_an_interrupted_tune_continues_and_its_winner_runs(tmp_path):
    out = tmp_path / "t"
    tune(_cfg(), "ssd", out, trials=2, progress=False)
    summary = tune(_cfg(), "ssd", out, trials=3, progress=False)  # the same command with a larger budget
    assert summary["trials"] == 3
    again = tune(_cfg(), "ssd", out, trials=3, progress=False)  # budget spent: nothing new
    assert again["trials"] == 3 and again["best"] == summary["best"]
    best = resolve_config(load_config(out / "best.yaml"))
    assert best.methods == ["ssd"]
    assert {k: best.hparams["ssd"][k] for k in summary["best"]["params"]} == summary["best"]["params"]
    info = json.loads((out / "tune.json").read_text())
    assert info["tuning_seconds"] >= info["setup_seconds"] > 0 and info["method_seconds_per_run"] > 0
    with pytest.raises(UserError, match=r"holds a tune of another config \(seed differs\)"):
        tune(_cfg("seed=1"), "ssd", out, trials=4, progress=False)


def test_missing_optuna_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` then raises ImportError
    with pytest.raises(UserError, match=r"^prunelora tune needs Optuna.*pip install prunelora\[tune\]$"):
        _optuna()


def test_the_retrain_free_objective_needs_no_retrain(tmp_path, monkeypatch):
    """objective=retrain_free: no retrain is trained, and a trial's value is the mean of its forget-validation
    accuracy and 100 - its retain-validation accuracy."""
    from prunelora.methods import retrain as retrain_module

    monkeypatch.setattr(retrain_module, "retrain", lambda *a: pytest.fail("a retrain was trained"))
    summary = tune(_cfg("eval.objective=retrain_free"), "ssd", tmp_path / "t", trials=2, progress=False)
    m = summary["best"]["metrics_on_validation"]
    assert summary["retrain_on_validation"] is None
    assert summary["best"]["value"] == pytest.approx((m["forget_TA"] + 100.0 - m["TA"]) / 2)

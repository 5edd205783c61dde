"""Forgetting scenarios: random samples, listed samples, and requests that arrive one after another."""

from __future__ import annotations

import json

import pytest
import torch

from prunelora.cli import main
from prunelora.config import load_config
from prunelora.data import make_sample_splits, random_indices, read_indices
from prunelora.errors import UserError
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.run import run


def test_random_indices():
    idx = random_indices(100, 0.1, seed=0)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < 100
    assert torch.equal(idx, random_indices(100, 0.1, seed=0)) and not torch.equal(idx, random_indices(100, 0.1, seed=1))
    assert len(random_indices(5, 0.01, seed=0)) == 1 and len(random_indices(5, 0.99, seed=0)) == 4


@pytest.mark.parametrize("text", ["4 1 9\n", "4,1,9", "[9, 4, 1]", "4\n1\n9\n", "{\"indices\": [9, 4, 1]}"])
def test_read_indices_formats(tmp_path, text):
    path = tmp_path / "forget.txt"
    path.write_text(text)
    assert read_indices(path, 10).tolist() == [1, 4, 9]


@pytest.mark.parametrize("text, message", [
    ("1 x 3", "must hold integers"),
    ("[1.5]", "at least one integer"),
    ("{\"classes\": [1]}", "at least one integer"),
    ("", "at least one integer"),
    ("3 10", "index 10 is out of range; the train set has indices 0..9"),
    ("-1", "index -1 is out of range"),
    (" ".join(map(str, range(10))), "names all 10 train samples"),
])
def test_read_indices_errors(tmp_path, text, message):
    path = tmp_path / "forget.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_indices(path, 10)
    with pytest.raises(UserError, match="does not exist"):
        read_indices(tmp_path / "missing.txt", 10)


def test_sample_splits_keep_every_class():
    y_train, y_test = torch.arange(20) % 4, torch.arange(8) % 4
    s = make_sample_splits(y_train, y_test, torch.tensor([0, 5, 6]))
    assert s.forget.tolist() == [0, 5, 6] and len(s.retain) == 17
    assert sorted(torch.cat([s.forget, s.retain]).tolist()) == list(range(20))
    assert s.test_retain.tolist() == list(range(8)) and len(s.test_forget) == 0 and s.forget_classes == []


@pytest.mark.parametrize("overrides, message", [
    (["forget.classes=[3]", "forget.fraction=0.1"], "forget.classes and forget.fraction are both set"),
    (["forget.fraction=1.5"], r"forget.fraction is 1.5; it must be in \(0, 1\)"),
    (["forget.sequence=[[3],[]]"], "forget.sequence needs at least one non-empty request"),
    (["forget.sequence=[[3]]", "forget.indices=f.txt"], "forget.indices and forget.sequence are both set"),
])
def test_request_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(overrides=overrides)


def test_default_request_is_the_data_sets_class():
    assert resolve_config(load_config()).forget.classes == ["cat"]  # animal-mnist, the default data set
    assert resolve_config(load_config(overrides=["data.name=digits"])).forget.classes == [3]
    assert resolve_config(load_config(overrides=["forget.fraction=0.1"])).forget.classes is None


def test_fraction_end_to_end(tiny_overrides):
    results = run(load_config(overrides=[*tiny_overrides, "methods=[retrain,finetune]", "forget.fraction=0.1"]),
                  progress=False, log=lambda *a: None)
    sizes = results["data"]["sizes"]
    assert sizes["forget"] == round(0.1 * (sizes["forget"] + sizes["retain"])) and sizes["test_forget"] == 0
    assert results["data"]["forget_classes"] == []
    retrain = next(r["metrics"] for r in results["runs"] if r["method"] == "retrain")
    assert retrain["forget_TA"] != retrain["forget_TA"]  # NaN: no class is forgotten
    assert retrain["UA"] < 100  # retrain still knows every class, so it gets many forget samples right


def test_indices_end_to_end(tmp_path, tiny_overrides, capsys):
    path = tmp_path / "forget.json"
    path.write_text(json.dumps(list(range(0, 300, 3))))
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "-q", *tiny_overrides, "methods=[finetune]", f"forget.indices={path}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["sizes"]["forget"] == 100
    assert "forget 100 samples across classes" in (out / "results.md").read_text()


def test_sequence_end_to_end(tiny_overrides, tmp_path):
    cfg = load_config(overrides=[*tiny_overrides, "methods=[retrain,finetune]", "forget.sequence=[[3],[5]]"])
    results = run(cfg, out=tmp_path, progress=False, log=lambda *a: None)
    runs = results["runs"]
    assert [(r["step"], r["method"]) for r in runs] == [
        (1, "original"), (1, "retrain"), (1, "finetune"), (2, "original"), (2, "retrain"), (2, "finetune")]
    assert [r["request"] for r in runs[::3]] == [[3], [5]]
    assert runs[3]["sizes"]["forget"] > runs[0]["sizes"]["forget"]  # the second request forgets 3 and 5
    ft1, ft2 = runs[2]["metrics"], runs[5]["metrics"]
    assert ft2["cumulative_time_s"] == pytest.approx(ft1["time_s"] + ft2["time_s"])
    assert results["data"]["forget_classes"] == [3, 5]
    report = (tmp_path / "results.md").read_text()
    assert "## Request 1 of 2: forget 3" in report and "## Request 2 of 2: forget 5" in report
    assert "Cumulative s" in report

"""The validation split (carved from the train set, stratified, seeded), the objectives, and `eval.select=best`."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_OVERRIDES
from prunelora.config import load_config
from prunelora.methods import UnlearnTask
from prunelora.workflows import validation as V
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.unlearn import unlearn_one

# the tiny configuration with an original trained 3 epochs (RA about 88% on digits: one epoch leaves it at 35%)
TUNE_OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(("train.epochs", "eval.curves"))] + [
    "train.epochs=3", "eval.evidence=[]"]


def _cfg(*extra):
    return load_config(overrides=[*TUNE_OVERRIDES, *extra])


# ---------------------------------------------------------------- the split and the objectives


def test_validation_split_is_stratified_seeded_and_carved_from_train(tiny_data):
    data, _ = tiny_data
    cfg = resolve_config(_cfg())
    keep, val, classes, forget = V.carve(data, cfg)
    assert classes == [3] and torch.equal(forget, data.y_train == 3)
    assert len(set(keep.tolist()) | set(val.tolist())) == len(data.y_train) and not set(keep.tolist()) & set(val.tolist())
    counts, drawn = torch.bincount(data.y_train, minlength=10), torch.bincount(data.y_train[val], minlength=10)
    assert drawn.tolist() == [round(0.1 * int(n)) for n in counts]  # 10% of every class, the forgotten one included
    assert torch.equal(V.carve(data, cfg)[1], val)
    other = resolve_config(_cfg("eval.val_seed=1"))
    assert not torch.equal(V.carve(data, other)[1], val)
    view = V.validation_view(cfg, data)
    assert torch.equal(view.data.x_test, data.x_train[val]) and torch.equal(view.data.x_train, data.x_train[keep])
    assert view.splits.test_forget.numel() == drawn[3] and view.splits.forget.numel() == counts[3] - drawn[3]


def test_sample_requests_keep_their_forget_samples_out_of_the_validation_split(tiny_data):
    data, _ = tiny_data
    cfg = resolve_config(_cfg("forget.fraction=0.1", "forget.classes=null"))
    _, val, classes, forget = V.carve(data, cfg)
    assert classes is None and not forget[val].any()
    view = V.validation_view(cfg, data)
    assert torch.equal(view.data.train_rows[view.splits.forget], torch.nonzero(forget).flatten())


def test_objectives_hand_computed():
    metrics = {"UA": 90.0, "MIA": 80.0, "RA": 97.0, "TA": 94.0, "forget_TA": 6.0}
    retrain = {"UA": 100.0, "MIA": 100.0, "RA": 99.0, "TA": 96.0}
    assert V.objective_value(metrics, retrain, "gap") == pytest.approx((10 + 20 + 2 + 2) / 4)
    assert V.objective_value(metrics, None, "retrain_free") == pytest.approx((6.0 + 6.0) / 2)


def test_select_best_keeps_the_epoch_that_scores_best(tiny_data, cpu_ctx):
    """The model returned is the epoch the validation objective chose: its score, recomputed, is the record's
    and the lowest of the epochs'."""
    data, _ = tiny_data
    cfg = resolve_config(_cfg("eval.select=best", "hparams.finetune.epochs=4", "hparams.finetune.lr=3e-3"))
    val = V.validation_view(cfg, data)
    from prunelora.workflows.experiment import train_original
    from prunelora.workflows.unlearn import retrain_reference

    original, _ = train_original(cfg, val.data, cpu_ctx)
    task = UnlearnTask(val.data, val.splits, cfg)
    val = retrain_reference(val, original, task, cpu_ctx)
    model, record = unlearn_one("finetune", original, task, cpu_ctx, val)
    scores = [h["val_objective"] for h in record["history"]]
    assert len(scores) == 4 and record["val_objective"] == min(scores)
    assert record["selected_epoch"] == scores.index(min(scores)) + 1
    assert V.objective_value(val.metrics(model, cpu_ctx, 512, cfg.seed), val.reference, "gap") == pytest.approx(min(scores))


def test_a_run_with_select_best_trains_without_the_validation_split(tiny_data):
    """eval.select=best in a run: every model trains on the train set without the validation samples, TA is still
    on the real test set, and each method that trains reports the epoch it kept."""
    import prunelora

    data, splits = tiny_data
    cfg = _cfg("eval.select=best", "methods=[retrain,finetune]", "unlearn.epochs=2")
    results = prunelora.run(cfg, progress=False, log=lambda *a, **k: None)
    held = len(V.carve(data, resolve_config(cfg))[1])
    sizes = results["data"]["sizes"]
    assert sizes["forget"] + sizes["retain"] == len(data.y_train) - held
    assert sizes["test_retain"] == len(splits.test_retain)
    finetune = next(r for r in results["runs"] if r["method"] == "finetune")
    scores = [h["val_objective"] for h in finetune["info"]["history"]]
    assert finetune["info"]["passes"] == len(scores) == 2
    assert finetune["info"]["selected_epoch"] == scores.index(min(scores)) + 1
    assert "selected_epoch" not in next(r for r in results["runs"] if r["method"] == "retrain")["info"]


def test_a_runs_validation_view_is_the_tuning_view(tiny_data):
    """selection_data builds its view from the run's own train tensors; it is the view `tune` scores on."""
    data, _ = tiny_data
    cfg = resolve_config(_cfg("eval.select=best"))
    run_data, _, shared = V.selection_data(cfg, data)
    alone = V.validation_view(cfg, data)
    assert shared.data.x_train is run_data.x_train
    for field in ("x_train", "y_train", "x_test", "y_test", "train_rows"):
        assert torch.equal(getattr(shared.data, field), getattr(alone.data, field))
    for field in ("forget", "retain", "test_forget", "test_retain"):
        assert torch.equal(getattr(shared.splits, field), getattr(alone.splits, field))

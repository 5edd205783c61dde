"""Accuracy, Avg. Gap and the metric set of `evaluate`, on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from prunelora.metrics import mia
from prunelora.metrics.evaluate import accuracy, avg_gap, evaluate, predict, quality


def test_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 0.0]])
    assert accuracy(logits, np.array([0, 1, 1, 1])) == pytest.approx(50.0)
    assert accuracy(logits, np.array([0, 1, 0, 0])) == 100.0
    assert math.isnan(accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int)))


def test_avg_gap():
    ref = {"UA": 100.0, "MIA": 100.0, "RA": 90.0, "TA": 80.0, "time_s": 1.0}
    m = {"UA": 90.0, "MIA": 80.0, "RA": 95.0, "TA": 80.0, "time_s": 99.0}
    # (|90-100| + |80-100| + |95-90| + |80-80|) / 4 = (10 + 20 + 5 + 0) / 4 = 8.75; time is not a gap metric
    assert avg_gap(m, ref) == pytest.approx(8.75)
    assert avg_gap(ref, ref) == 0.0


class _Constant(nn.Module):
    """Always predicts class `k`."""

    def __init__(self, num_classes: int, k: int):
        super().__init__()
        self.logits = torch.zeros(num_classes)
        self.logits[k] = 5.0

    def forward(self, x):
        return self.logits.expand(len(x), -1).clone()


def test_evaluate_constant_model(tiny_data, cpu_ctx):
    data, splits = tiny_data
    metrics = evaluate(_Constant(10, 0), data, splits, cpu_ctx)
    y_train, y_test = data.y_train, data.y_test
    # class 3 is forgotten; predicting 0 everywhere gets every forget sample wrong
    assert metrics["UA"] == 100.0
    assert metrics["forget_TA"] == 0.0
    assert metrics["RA"] == pytest.approx(100.0 * (y_train[splits.retain] == 0).float().mean().item())
    assert metrics["TA"] == pytest.approx(100.0 * (y_test[splits.test_retain] == 0).float().mean().item())
    keys = ("MIA", "MIA_entropy", "MIA_m_entropy", "MIA_loss_balanced", "MIA_loss_authors")
    assert set(keys) <= set(metrics) and "MIA_loss" not in metrics
    for key in keys:
        assert 0.0 <= metrics[key] <= 100.0


def test_evaluate_perfect_model_on_forget_set(tiny_data, cpu_ctx):
    data, splits = tiny_data
    metrics = evaluate(_Constant(10, 3), data, splits, cpu_ctx)
    assert metrics["UA"] == 0.0 and metrics["forget_TA"] == 100.0
    assert metrics["RA"] == 0.0 and metrics["TA"] == 0.0


def test_predict_uses_eval_mode_and_any_batch_size(tiny_data, cpu_ctx):
    data, _ = tiny_data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.5))
    a = predict(model, data, data.x_test, cpu_ctx, batch_size=7)
    b = predict(model, data, data.x_test, cpu_ctx, batch_size=1000)
    assert a.shape == (len(data.x_test), 10) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6)  # eval mode: dropout is off, batching does not matter
    assert not model.training


def test_quality_reports_the_authors_mia_on_their_draw(tiny_data, monkeypatch):
    """MIA_loss_authors: the logits' cross-entropy of their draw of retain samples (members) against the
    retain-class test samples (non-members, all of them here: fewer than 5,000), unbalanced."""
    data, splits = tiny_data
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    f, r, tr = splits.forget.numpy(), splits.retain.numpy(), splits.test_retain.numpy()
    train_logits = np.zeros((len(y_train), 10), dtype=np.float32)
    test_logits = np.zeros((len(y_test), 10), dtype=np.float32)
    train_logits[r, y_train[r]] = 5.0  # members: loss ln(e^5 + 9) - 5 = 0.06
    test_logits[tr, y_test[tr]] = -5.0  # non-members: loss ln(e^-5 + 9) + 5 = 7.20
    high = f[len(f) // 3:]  # two thirds of the forget samples look like non-members
    train_logits[f, y_train[f]] = 5.0
    train_logits[high, y_train[high]] = -5.0
    seen = {}
    real = mia.authors_efficacy

    def spy(member, nonmember, target):
        seen.update(member=member, nonmember=nonmember, target=target)
        return real(member, nonmember, target)

    monkeypatch.setattr(mia, "authors_efficacy", spy)
    metrics = quality(train_logits, test_logits, data, splits, seed=0)
    assert metrics["MIA_loss_authors"] == pytest.approx(100.0 * len(high) / len(f))
    assert len(seen["member"]) == min(len(r), 1000) and len(seen["nonmember"]) == len(tr)  # not balanced
    np.testing.assert_allclose(seen["member"], math.log(math.exp(5) + 9) - 5, rtol=1e-6)
    np.testing.assert_allclose(seen["nonmember"], math.log(math.exp(-5) + 9) + 5, rtol=1e-6)
    assert len(seen["target"]) == len(f)

"""Evidence metrics on cases with known answers, and in the report of a tiny run."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch

from prunelora.config import EvalConfig, load_config
from prunelora.errors import UserError
from prunelora.metrics.evaluate import outputs, predict
from prunelora.metrics.evidence import (
    EvidenceInput,
    balanced_accuracy,
    kl_js,
    penultimate,
    probe_accuracy,
    probe_metric,
    relearn,
)
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.run import run


def test_balanced_accuracy_hand_computed():
    pred = np.array([1, 1, 0, 0, 0, 0])
    target = np.array([1, 0, 0, 0, 0, 0])
    assert balanced_accuracy(pred, target) == pytest.approx(100 * (1.0 + 4 / 5) / 2)


def test_probe_separates_an_encoded_class_and_not_a_random_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 60)
    features = rng.normal(size=(300, 16))
    target = labels == 2
    encoded = features.copy()
    encoded[:, 0] += 4.0 * target  # one feature direction encodes the class
    assert probe_accuracy(encoded, target, seed=0) > 95
    assert 35 < probe_accuracy(features, target, seed=0) < 65  # the features say nothing about it


def test_kl_js_known_values():
    logits = np.array([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    reference = np.array([[0.0, 0.0]])  # q = (0.5, 0.5)
    kl, js = kl_js(logits, reference)
    assert kl == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    m = np.array([0.625, 0.375])
    expected_js = 0.5 * sum(q * math.log(q / mm) for q, mm in zip([0.5, 0.5], m)) + 0.5 * sum(
        p * math.log(p / mm) for p, mm in zip([0.75, 0.25], m))
    assert js == pytest.approx(expected_js)
    assert kl_js(reference, logits)[1] == pytest.approx(js)  # JS is symmetric
    assert kl_js(logits, logits) == pytest.approx((0.0, 0.0), abs=1e-12)
    far = kl_js(np.array([[100.0, -100.0]]), np.array([[-100.0, 100.0]]))
    assert far[1] == pytest.approx(math.log(2), rel=1e-6)  # disjoint distributions: JS = ln 2


def test_penultimate_is_the_heads_input(tiny_data, trained_original, cpu_ctx):
    data, _ = tiny_data
    feats = penultimate(trained_original, data, data.x_test[:7], cpu_ctx)
    with torch.no_grad():
        expected = trained_original.forward_features(data.normalise(data.x_test[:7]))
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_the_probe_reads_the_features_of_the_pass_that_made_the_test_logits(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    outs = outputs(trained_original, data, cpu_ctx, batch_size=64)
    np.testing.assert_array_equal(outs.test_features, penultimate(trained_original, data, data.x_test, cpu_ctx, 64))
    train_logits, test_logits = outs  # still the (train, test) pair every metric unpacks
    for again in (copy.deepcopy(outs), pickle.loads(pickle.dumps(outs))):
        assert len(again) == 2 and np.array_equal(again.test_features, outs.test_features)
    np.testing.assert_array_equal(test_logits, predict(trained_original, data, data.x_test, cpu_ctx, 64))
    passes = []
    hook = trained_original.register_forward_hook(lambda *args: passes.append(1))
    inputs = EvidenceInput(data, splits, cpu_ctx, EvalConfig(batch_size=64))
    try:
        shared = probe_metric(trained_original, outs, inputs)["probe"]
        assert passes == []  # no forward pass of its own
        alone = probe_metric(trained_original, (train_logits, test_logits), inputs)["probe"]
        assert passes  # without the features it makes them
    finally:
        hook.remove()
    assert shared == alone and 0 <= shared <= 100


def test_relearn_is_deterministic_and_leaves_the_model_alone(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    before = copy.deepcopy(trained_original.state_dict())
    args = (trained_original, data, splits.forget, splits.retain, splits.test_forget, cpu_ctx)
    a = relearn(*args, samples=8, steps=3)
    assert a == relearn(*args, samples=8, steps=3) and 0 <= a <= 100
    for key, value in trained_original.state_dict().items():
        assert torch.equal(value, before[key])


def test_evidence_in_a_run(tiny_overrides):
    results = run(load_config(overrides=[*tiny_overrides, "methods=[retrain,finetune]"]), progress=False, log=lambda *a: None)
    metrics = {r["method"]: r["metrics"] for r in results["runs"]}
    assert metrics["retrain"]["KL_forget"] == 0.0 and metrics["retrain"]["JS_test"] == 0.0
    assert metrics["original"]["KL_forget"] > 0 and metrics["finetune"]["JS_forget"] > 0
    for m in metrics.values():
        assert 0 <= m["probe"] <= 100 and 0 <= m["relearn_TA"] <= 100
    quiet = run(load_config(overrides=[*tiny_overrides, "methods=[finetune]", "eval.evidence=[]"]), progress=False,
                log=lambda *a: None)
    assert "probe" not in quiet["runs"][0]["metrics"]


def test_unknown_evidence_metric():
    with pytest.raises(UserError, match="unknown evidence metric 'prob'. Did you mean 'probe'"):
        resolve_config(load_config(overrides=["eval.evidence=[prob]"]))

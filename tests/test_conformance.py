"""Our metrics against their references' formulas, written out here on the same inputs (docs/metrics.md): where they
agree, to what precision, and every documented departure pinned to the amount docs/metrics.md states.

References: the NeurIPS 2023 unlearning challenge's metric.py (google-deepmind/unlearning_evaluation), Song & Mittal's
modified entropy (inspire-group/membership-inference-evaluation), Unlearn-Sparse's evaluation/SVC_MIA.py
(OPTML-Group/Unlearn-Sparse) and KLOM's unlearning_bench/eval.py (RoyRin/data-unlearning-bench)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from prunelora.metrics import quality as Q
from prunelora.metrics.attack import logit_confidence
from prunelora.metrics.mia import features

LN_1E45 = math.log(1e45)  # 103.616: the bound of the challenge's phi
LN_1E30 = math.log(1e30)  # 69.078: -log of our floor under a probability


# ---------------------------------------------------------------- the challenge's phi (eval.quality_phi)


def reference_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """compute_logit_scaled_confidence of the challenge's metric.py, step by step: shift by the row maximum and
    exponentiate in the logits' dtype, softmax in float64, the wrong classes' probabilities summed with the true one
    zeroed, and log(p + 1e-45) on both (on a copy: the reference shifts its input in place)."""
    z = logits.copy()
    z -= np.max(z, axis=1, keepdims=True)
    probs = np.array(np.exp(z), dtype=np.float64)
    probs /= np.sum(probs, axis=1, keepdims=True)
    rows = np.arange(len(labels))
    correct = probs[rows, labels]
    probs[rows, labels] = 0
    return np.log(correct + 1e-45) - np.log(np.sum(probs, axis=1) + 1e-45)


def _confident_logits(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Rows of gaps 0.5 to 200 between the true class and the rest, both signs, and a random block."""
    gaps = np.array([0.5, 10.0, 60.0, 80.0, 88.0, 95.0, 100.0, 103.0, 110.0, 150.0, 200.0])
    z = np.zeros((2 * len(gaps), 5))
    z[: len(gaps), 0] = gaps  # the true class far ahead
    z[len(gaps):, 1:] = gaps[:, None]  # the true class far behind
    rng = np.random.default_rng(0)
    z = np.concatenate([z, rng.normal(0, 4, (50, 5))])
    return z.astype(dtype), np.zeros(len(z), dtype=np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_challenge_phi_is_the_references_arithmetic(dtype):
    """On ordinary and very confident logits of either precision, the challenge form is the reference's number (to
    1e-12 in phi units), including the float32 subnormals past a gap of 87; the input is left as it was."""
    logits, labels = _confident_logits(dtype)
    before = logits.copy()
    np.testing.assert_allclose(Q.challenge_phi(logits, labels), reference_phi(logits, labels), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(logits, before)
    np.testing.assert_array_equal(Q.phi(logits, labels, "challenge"), Q.challenge_phi(logits, labels))


def test_exact_and_challenge_agree_on_ordinary_outputs():
    """float64 logits with |phi| well under 75: the two forms agree to 1e-12; the default is the exact phi, bit for
    bit the one every number so far was computed with."""
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(0, 5, (500, 10)), rng.integers(0, 10, 500)
    exact = Q.phi(logits, labels)
    assert np.abs(exact).max() < 60
    np.testing.assert_array_equal(exact, logit_confidence(logits, labels))
    np.testing.assert_allclose(Q.phi(logits, labels, "challenge"), exact, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="phi form 'lira'"):
        Q.phi(logits, labels, "lira")


def test_very_confident_outputs_part():
    """Logits (g, 0, 0) in float64. True class ahead: the exact phi is g - ln 2, the challenge's log(1 + 1e-45) -
    log(2 e^-g + 1e-45), at g = 90 short of it by log(1 + 1e-45 / (2 e^-90)) = 6.1e-7, at g = 150 and 300 pinned to
    the bound ln(1e45) = 103.6 while the exact phi keeps growing. True class g behind: -g - ln(1 + e^-g) exactly,
    -min(g, 103.6) in the challenge's form (at g = 90 within 2e-6)."""
    for g in [90.0, 150.0, 300.0]:
        z = np.array([[g, 0.0, 0.0]])
        ahead, behind = np.array([0]), np.array([1])
        exact, challenge = Q.phi(z, ahead)[0], Q.phi(z, ahead, "challenge")[0]
        assert exact == pytest.approx(g - math.log(2), abs=1e-12)
        if g == 90.0:
            short = math.log1p(1e-45 / (2 * math.exp(-90.0)))
            assert exact - challenge == pytest.approx(short, rel=1e-3) and short > 1e-7
        else:
            assert challenge == pytest.approx(LN_1E45, abs=1e-12)
        assert Q.phi(z, behind)[0] == pytest.approx(-g - math.log1p(math.exp(-g)), abs=1e-12)
        assert Q.phi(z, behind, "challenge")[0] == pytest.approx(-min(g, LN_1E45), abs=2e-6 if g == 90.0 else 1e-12)


def _logits(labels: np.ndarray, phi: np.ndarray, classes: int = 10) -> np.ndarray:
    """float32 logits (as a network gives) whose exact phi is phi[i]: others 0, the true class ln(C - 1) + phi."""
    z = np.zeros((len(labels), classes))
    z[np.arange(len(labels)), labels] = np.log(classes - 1) + phi
    return z.astype(np.float32)


def test_forgetting_quality_reads_the_setting(tiny_cfg, tiny_data, cpu_ctx, monkeypatch):
    """Forget samples at phi 120-123 under the 4 unlearned models and 130-133 under the 4 retrained ones: exactly,
    every sample is told apart (F = 0); in the challenge's form both sides sit at its bound 103.6 and nothing is
    (F = 1). KLOM reads the exact margin under either setting: it never calls the challenge's form."""
    from prunelora.metrics.evidence import EvidenceInput
    from prunelora.workflows import bank as ensembles

    data, splits = tiny_data
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    forget = splits.forget.numpy()

    def model(base: float, k: int):
        phi = np.full(len(y_train), 5.0)
        phi[forget] = base + k
        return _logits(y_train, phi), _logits(y_test, np.full(len(y_test), 5.0))

    unlearned, retrained = [model(120.0, k) for k in range(4)], [model(130.0, k) for k in range(4)]
    monkeypatch.setattr(ensembles, "ensemble", lambda own, inputs: (unlearned, retrained))
    for form, f, median in [("exact", 0.0, 131.5), ("challenge", 1.0, LN_1E45)]:
        cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(tiny_cfg.eval, quality_phi=form))
        inputs = EvidenceInput(data, splits, cpu_ctx, cfg.eval, cfg, method="finetune")
        m = Q.forgetting_quality_metric(None, unlearned[0], inputs)
        assert m["quality_F"] == f and m["quality_leaks"][0]["phi_retrained"] == pytest.approx(median, abs=1e-4)

    def refuse(*args):
        raise AssertionError("KLOM computed the challenge's phi")

    monkeypatch.setattr(Q, "challenge_phi", refuse)
    assert Q.klom_metric(None, unlearned[0], inputs)["KLOM_forget"] == 0.0  # both sides clipped to 100: one bin


def test_the_setting_is_checked_and_changes_no_model(tiny_cfg, tiny_data, monkeypatch):
    """eval.quality_phi takes exactly the forms quality.phi knows; another is a one-line UserError. Scoring the same
    request with the other form trains no unlearned model again (the in-process memo of ensembles.py ignores it)."""
    from prunelora.config import EvalConfig, load_config
    from prunelora.errors import UserError
    from prunelora.metrics.evidence import EvidenceInput
    from prunelora.workflows import bank as ensembles

    assert EvalConfig().quality_phi == "exact"
    for form in Q.PHI_FORMS:
        assert load_config(overrides=[f"eval.quality_phi={form}"]).eval.quality_phi == form
    for bad in ["Challenge", "kaggle", "1"]:
        with pytest.raises(UserError, match=f"eval.quality_phi is '{bad}'; it must be exact or challenge"):
            load_config(overrides=[f"eval.quality_phi={bad}"])

    trained = []
    monkeypatch.setattr(ensembles, "_RETRAINED", {})
    monkeypatch.setattr(ensembles, "_UNLEARNED", {})
    monkeypatch.setattr(ensembles, "shadow_model", lambda inputs, k: ("retrained", k))
    monkeypatch.setattr(ensembles, "unlearned_model", lambda inputs, k: trained.append(k) or ("unlearned", k))
    monkeypatch.setattr(ensembles, "_outputs", lambda model, inputs: model)
    data, splits = tiny_data
    for form in ["exact", "challenge", "exact"]:
        cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(tiny_cfg.eval, quality_phi=form))
        side, _ = ensembles.ensemble(("own",), EvidenceInput(data, splits, None, cfg.eval, cfg, method="finetune"))
        assert side == [("own",), ("unlearned", 1), ("unlearned", 2), ("unlearned", 3)]
    assert trained == [1, 2, 3]


# ---------------------------------------------------------------- the challenge's epsilon grid


def test_two_threshold_rule_has_400_right_ends_where_the_reference_may_have_401():
    """The reference counts its right ends as ceil((max_ - min_) * 100) with max_ - min_ = 4 up to rounding: for
    this narrow side it is 400.0000000000001, so 401; ours are always 400 (x 400 lengths). docs/metrics.md gives the
    measured effect (none at N = 4 and 8; 3 of 3,000 samples at N = 16)."""
    narrow, wide = np.array([-1.35, -3.95, 1.29, 4.27]), np.array([-10.0, 0.0, 5.0, 10.0])
    top, spread = float(narrow.max()), float(np.ptp(narrow))
    assert math.ceil(((top + 2.0) - (float(narrow.min()) + spread - 2.0)) * 100) == 401
    assert Q.double_threshold_counts(narrow, wide).shape == (400 * 400, 2)
    assert Q.double_threshold_counts(wide, narrow).shape == (400 * 400, 2)


# ---------------------------------------------------------------- m-entropy: Song & Mittal, not Unlearn-Sparse


def song_mittal(p: np.ndarray, y: int) -> float:
    """Song & Mittal's modified entropy of one row, as their _m_entr_comp: -(1 - p_y) log p_y - sum_{i != y} p_i
    log(1 - p_i), a probability of exactly 0 (true class) or 1 (another) taking log 1e-30."""
    total = 0.0
    for i, pi in enumerate(p):
        if i == y:
            total += LN_1E30 if pi == 0 else -(1 - pi) * math.log(pi)
        else:
            total += LN_1E30 if pi == 1 else -pi * math.log(1 - pi)
    return total


def unlearn_sparse(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unlearn-Sparse's m_entropy (evaluation/SVC_MIA.py) on a whole set: the columns of every label the set holds
    take 1 - p, the other columns keep p, and every column is weighed by log p (not log(1 - p))."""
    logp = np.log(np.where(p > 0, p, 1e-30))
    weight = p.copy()
    weight[:, np.unique(labels)] = 1 - p[:, np.unique(labels)]
    return -(weight * logp).sum(1)


def test_m_entropy_is_song_and_mittals():
    """Hand-built rows, true class 0: ours is Song & Mittal's to 1e-12, closed forms included; p = 0 and 1 take
    their log 1e-30."""
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    ours = features(p, np.zeros(4, dtype=np.int64))["m_entropy"]
    np.testing.assert_allclose(ours, [song_mittal(row, 0) for row in p], rtol=0, atol=1e-12)
    assert ours[0] == pytest.approx(-(0.3 * math.log(0.7) + 0.2 * math.log(0.8) + 0.1 * math.log(0.9)), abs=1e-12)
    assert ours[1] == pytest.approx(-(0.9 * math.log(0.1) + 0.6 * math.log(0.4) + 0.3 * math.log(0.7)), abs=1e-12)
    assert ours[2] == pytest.approx(2 * LN_1E30, abs=1e-9) and ours[3] == 0.0


def test_m_entropy_departs_from_unlearn_sparse_where_it_should():
    """Unlearn-Sparse's form on the rows above: on a one-class set (a forgotten class) the other classes count
    p_i log p_i, on a set of all three classes (the retain or test set) every class counts (1 - p_i) log p_i. Both
    equal ours only where the output is one-hot on the true class."""
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [1.0, 0.0, 0.0]])
    ours = features(p, np.zeros(3, dtype=np.int64))["m_entropy"]
    one_class = unlearn_sparse(p, np.zeros(3, dtype=np.int64))
    assert one_class[0] == pytest.approx(-(0.3 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)))
    all_classes = unlearn_sparse(p, np.array([0, 1, 2]))
    assert all_classes[0] == pytest.approx(-(0.3 * math.log(0.7) + 0.8 * math.log(0.2) + 0.9 * math.log(0.1)))
    assert ours[0] - one_class[0] == pytest.approx(0.2 * math.log(0.2 / 0.8) + 0.1 * math.log(0.1 / 0.9))
    assert np.all(np.abs(ours[:2] - one_class[:2]) > 1e-3) and np.all(np.abs(ours[:2] - all_classes[:2]) > 1e-3)
    assert ours[2] == one_class[2] == 0.0 != all_classes[2]  # one-hot: alike on one class; the other columns count
    # on the whole set the all-class form is the one Unlearn-Sparse feeds its SVC for the rows of the retain set
    assert all_classes[2] == pytest.approx(2 * LN_1E30)


def test_tiny_probabilities_take_our_floor():
    """A departure from Song & Mittal in the tail: we floor a probability at 1e-30 before its log, they only one of
    exactly 0. p_y = 1e-40 (another class at 1): theirs ln(1e40) + ln(1e30) = 161.2, ours 2 ln(1e30) = 138.2; the
    loss feature likewise stops at ln(1e30) = 69.1 nats (the authors' loss MIA uses the unfloored cross-entropy)."""
    p, y = np.array([[1e-40, 1.0 - 1e-40, 0.0]]), np.array([0])
    f = features(p, y)
    assert song_mittal(p[0], 0) == pytest.approx(math.log(1e40) + LN_1E30, rel=1e-12)
    assert f["m_entropy"][0] == pytest.approx(2 * LN_1E30, rel=1e-12)
    assert f["loss"][0] == pytest.approx(LN_1E30, rel=1e-12)
    assert features(np.array([[1e-20, 1.0 - 1e-20, 0.0]]), y)["m_entropy"][0] == pytest.approx(
        song_mittal(np.array([1e-20, 1.0 - 1e-20, 0.0]), 0), rel=1e-12)  # above the floor: the same


# ---------------------------------------------------------------- KLOM: np.digitize's last edge


def reference_klom(u: np.ndarray, r: np.ndarray, fixed: bool) -> float:
    """compute_binned_KL_div of data-unlearning-bench, step by step: clip to [-100, 100], 21 edges over the pooled
    range, np.digitize, counts of bins 1..20, 1e-5 under empty retrained bins where the unlearned has mass,
    scipy.stats.entropy. np.digitize puts a value equal to the last edge (the pooled maximum) in bin 21, which is not
    counted; `fixed` puts it in bin 20, as np.histogram's closed last bin does."""
    u, r = np.clip(u, -100, 100), np.clip(r, -100, 100)
    low, high = min(u.min(), r.min()), max(u.max(), r.max())
    bins = np.linspace(low, high if high > low else low + 1, 21)

    def probs(x):
        index = np.digitize(x, bins)
        index = np.minimum(index, 20) if fixed else index
        counts = np.array([np.sum(index == i) for i in range(1, 21)])
        return counts / counts.sum() if counts.sum() > 0 else np.zeros(20)

    p, q = probs(u), probs(r)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.entropy(pk=p, qk=np.where(p > 0, np.maximum(q, 1e-5), q)))


def test_klom_equals_the_fixed_reference_with_ties_at_the_maximum():
    """Random margins on a 0.5 grid (so ties are common), half the samples with several margins at the pooled
    maximum, some past the clip: ours is the fixed reference to 1e-14."""
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(3, 9))
        u, r = np.round(rng.normal(0, 4, n) * 2) / 2, np.round(rng.normal(1, 4, n) * 2) / 2
        if rng.random() < 0.5:
            top = max(u.max(), r.max())
            u[: rng.integers(1, n)] = top
        if rng.random() < 0.1:
            u = u + 150.0
        assert Q.klom_sample(u, r) == pytest.approx(reference_klom(u, r, fixed=True), abs=1e-14)


def test_klom_departs_from_the_buggy_reference_by_the_dropped_maxima():
    """Margins 0 0 10 10 against 0 0 0 10: ours 1/2 ln(1/2 / 3/4) + 1/2 ln(1/2 / 1/4) = 1/2 ln(4/3) = 0.144; the
    reference drops the three 10s and sees one bin on each side: 0. Every unlearned margin past the clip (at the
    pooled maximum 100) against 0 1 2 3: ours ln(1e5 + 1) = 11.5 (disjoint), the reference has no unlearned margin
    left: NaN. Where no margin ties at the maximum but one, and both sides hold it, the two agree."""
    u, r = np.array([0.0, 0, 10, 10]), np.array([0.0, 0, 0, 10])
    assert Q.klom_sample(u, r) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert reference_klom(u, r, fixed=False) == 0.0
    u, r = np.array([120.0, 130, 140, 150]), np.array([0.0, 1, 2, 3])
    assert Q.klom_sample(u, r) == pytest.approx(math.log(1e5 + 1), rel=1e-12)
    assert math.isnan(reference_klom(u, r, fixed=False))
    u, r = np.array([0.0, 1, 2, 3]), np.array([3.0, 2, 1, 0])
    assert Q.klom_sample(u, r) == reference_klom(u, r, fixed=False) == 0.0


# ---------------------------------------------------------------- divergence: textbook KL and JS


def test_divergence_is_scipys_kl_and_js():
    """kl_js against scipy on random logits: KL(retrain || model) is stats.entropy(p, q), JS is the square of
    scipy's Jensen-Shannon distance (natural log), each averaged over samples, to 1e-12."""
    from prunelora.metrics.evidence import kl_js
    from prunelora.metrics.mia import softmax

    rng = np.random.default_rng(3)
    model, reference = rng.normal(0, 3, (200, 10)), rng.normal(0, 3, (200, 10))
    p, q = softmax(reference), softmax(model)
    kl, js = kl_js(model, reference)
    assert kl == pytest.approx(np.mean([stats.entropy(a, b) for a, b in zip(p, q)]), abs=1e-12)
    assert js == pytest.approx(np.mean([jensenshannon(a, b) ** 2 for a, b in zip(p, q)]), abs=1e-12)

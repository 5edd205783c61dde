"""Membership-inference features and attacks, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunelora.metrics import mia

# Rows: p = [0.7, 0.2, 0.1] with y = 0, the same p with y = 1, and p = [0.5, 0.5, 0] with y = 0 (a zero prob).
PROBS = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
LABELS = np.array([0, 1, 0])
LN = {x: math.log(x) for x in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9)}


@pytest.fixture
def feats():
    return mia.features(PROBS, LABELS)


def test_feature_keys_and_dtype(feats):
    assert set(feats) == {"confidence", "entropy", "m_entropy", "loss"}
    for value in feats.values():
        assert value.dtype == np.float64 and value.shape == (3,)


def test_confidence_is_probability_of_true_class(feats):
    np.testing.assert_allclose(feats["confidence"], [0.7, 0.2, 0.5])


def test_entropy(feats):
    # row 0, 1: -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.249672 + 0.321888 + 0.230259 = 0.801819
    # row 2:    -(0.5 ln 0.5 + 0.5 ln 0.5 + 0 * ln 0)   = ln 2 = 0.693147  (0 * ln 0 counts as 0)
    h = -(0.7 * LN[0.7] + 0.2 * LN[0.2] + 0.1 * LN[0.1])
    assert h == pytest.approx(0.801819, abs=1e-6)
    np.testing.assert_allclose(feats["entropy"], [h, h, math.log(2)], rtol=1e-12)


def test_m_entropy_uses_log_one_minus_p_for_other_classes(feats):
    # m_entropy = -(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)
    # row 0 (y=0): -(0.3) ln 0.7 - 0.2 ln 0.8 - 0.1 ln 0.9 = 0.107002 + 0.044629 + 0.010536 = 0.162167
    # row 1 (y=1): -(0.8) ln 0.2 - 0.7 ln 0.3 - 0.1 ln 0.9 = 1.287550 + 0.842781 + 0.010536 = 2.140867
    # row 2 (y=0): -(0.5) ln 0.5 - 0.5 ln 0.5 - 0 ln 1     = ln 2 = 0.693147
    row0 = -0.3 * LN[0.7] - 0.2 * LN[0.8] - 0.1 * LN[0.9]
    row1 = -0.8 * LN[0.2] - 0.7 * LN[0.3] - 0.1 * LN[0.9]
    assert row0 == pytest.approx(0.162167, abs=1e-6)
    assert row1 == pytest.approx(2.140867, abs=1e-6)
    np.testing.assert_allclose(feats["m_entropy"], [row0, row1, math.log(2)], rtol=1e-12)
    # with ln(p_i) instead of ln(1 - p_i) row 0 would be 0.107002 + 0.321888 + 0.230259 = 0.659149
    wrong_row0 = -0.3 * LN[0.7] - 0.2 * LN[0.2] - 0.1 * LN[0.1]
    assert abs(feats["m_entropy"][0] - wrong_row0) > 0.4


def test_loss_is_negative_log_of_true_class(feats):
    # -ln 0.7 = 0.356675, -ln 0.2 = 1.609438, -ln 0.5 = 0.693147
    np.testing.assert_allclose(feats["loss"], [0.356675, 1.609438, 0.693147], atol=1e-6)


def test_features_of_certain_predictions_are_finite():
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    f = mia.features(probs, np.array([0, 0]))
    for value in f.values():
        assert np.all(np.isfinite(value))
    # correct and certain: nothing to lose, no uncertainty
    assert f["loss"][0] == 0.0 and f["entropy"][0] == 0.0 and f["m_entropy"][0] == 0.0
    # certainly wrong: ln is clamped at 1e-30, so the loss is -ln(1e-30) = 69.0776
    assert f["loss"][1] == pytest.approx(-math.log(1e-30))


def test_features_do_not_modify_input():
    probs = PROBS.copy()
    mia.features(probs, LABELS)
    np.testing.assert_array_equal(probs, PROBS)


def test_softmax():
    # [0, ln 2] -> [1/3, 2/3]; a constant shift changes nothing; huge logits do not overflow
    np.testing.assert_allclose(mia.softmax(np.array([[0.0, math.log(2.0)]])), [[1 / 3, 2 / 3]])
    np.testing.assert_allclose(mia.softmax(np.array([[1000.0, 1000.0], [-5.0, -5.0]])), [[0.5, 0.5], [0.5, 0.5]])
    logits = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(mia.softmax(logits), mia.softmax(logits + 7.0))
    np.testing.assert_allclose(mia.softmax(logits).sum(axis=1), np.ones(5))


MEMBERS = np.linspace(0.9, 1.0, 20)
NONMEMBERS = np.linspace(0.0, 0.1, 20)
TARGETS = np.array([0.02, 0.05, 0.95])  # two look like non-members, one like a member


@pytest.mark.parametrize("classifier", ["svc", "logreg"])
def test_attack_on_separable_data(classifier):
    assert mia.attack_efficacy(MEMBERS, NONMEMBERS, TARGETS, classifier) == pytest.approx(200 / 3, rel=1e-12)


@pytest.mark.parametrize("classifier", ["svc", "logreg"])
def test_attack_learns_direction_from_labels(classifier):
    # members with low feature values: the same targets now read the other way round
    assert mia.attack_efficacy(NONMEMBERS, MEMBERS, TARGETS, classifier) == pytest.approx(100 / 3, rel=1e-12)
    assert mia.attack_efficacy(MEMBERS, NONMEMBERS, np.array([0.0, 0.01]), classifier) == 100.0
    assert mia.attack_efficacy(MEMBERS, NONMEMBERS, np.array([0.99, 1.0]), classifier) == 0.0


def test_mia_efficacy_uses_each_feature_with_its_classifier():
    hi, lo = np.linspace(0.9, 1.0, 20), np.linspace(0.0, 0.1, 20)
    member = {k: hi for k in ("confidence", "entropy", "m_entropy", "loss")}
    nonmember = {k: lo for k in member}
    # each attack sees its own feature: low -> non-member (100), high -> member (0)
    target = {"confidence": np.full(4, 0.05), "entropy": np.full(4, 0.95),
              "m_entropy": np.full(4, 0.05), "loss": np.full(4, 0.95)}
    assert mia.mia_efficacy(member, nonmember, target) == {
        "MIA": 100.0, "MIA_entropy": 0.0, "MIA_m_entropy": 100.0, "MIA_loss_balanced": 0.0,
    }
    assert mia.ATTACKS["MIA"] == ("confidence", "svc") and mia.ATTACKS["MIA_loss_balanced"] == ("loss", "logreg")


def test_balanced_equal_sizes_subset_and_seeded():
    member, nonmember = np.arange(100, 200), np.arange(30)
    m1, n1 = mia.balanced(member, nonmember, seed=0)
    m2, n2 = mia.balanced(member, nonmember, seed=0)
    assert len(m1) == len(n1) == 30
    np.testing.assert_array_equal(n1, nonmember)  # the smaller set is kept whole
    assert set(m1) <= set(member) and len(set(m1)) == 30 and np.all(np.diff(m1) > 0)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(n1, n2)
    m3, _ = mia.balanced(member, nonmember, seed=1)
    assert not np.array_equal(m1, m3)
    # the larger set may be either one
    a, b = mia.balanced(np.arange(5), np.arange(50, 70), seed=3)
    assert len(a) == len(b) == 5 and set(b) <= set(range(50, 70))


def test_balanced_leaves_equal_sets_unchanged():
    a, b = mia.balanced(np.arange(10), np.arange(10, 20), seed=0)
    np.testing.assert_array_equal(a, np.arange(10))
    np.testing.assert_array_equal(b, np.arange(10, 20))


# ---------------------------------------------------------------- the PruneLoRA authors' variant


def test_cross_entropy_of_logits_by_hand():
    # logits [0, ln 3]: label 0 -> ln(1 + 3) - 0 = ln 4; label 1 -> ln 4 - ln 3 = ln(4/3)
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [1000.0, 0.0]], dtype=np.float32)
    loss = mia.cross_entropy(logits, np.array([0, 1, 1]))
    np.testing.assert_allclose(loss, [math.log(4.0), math.log(4.0 / 3.0), 1000.0], rtol=1e-6)
    assert loss.dtype == np.float64  # not clamped: a certainly wrong prediction costs its full 1000 nats


def test_authors_attack_on_separable_losses():
    # members lose little, non-members a lot: two forget samples look like non-members, two like members
    members, nonmembers = np.linspace(0.0, 0.1, 30), np.linspace(2.0, 2.1, 10)
    targets = np.array([0.05, 2.05, 2.0, 0.0])
    assert mia.authors_efficacy(members, nonmembers, targets) == 50.0
    assert mia.authors_efficacy(members, nonmembers, np.array([3.0, 2.5])) == 100.0


# Loss values 0, 1, 2, 3 with (members, non-members) = (400, 100), (200, 100), (100, 100), (50, 100): the
# non-member odds 1/4, 1/2, 1, 2 are exactly linear in log scale, (loss - 2) ln 2, so logistic regression fits
# that line (the L2 penalty moves it by ~0.003 with 1,150 samples) and calls losses above 2 non-members.
# Class weights n / (2 n_class) (the balanced variant) multiply the odds by 750 / 400: the boundary moves to
# 2 - ln(1.875) / ln 2 = 1.093, and the target at 1.5 becomes a non-member too.
IMBALANCED_MEMBERS = np.repeat([0.0, 1.0, 2.0, 3.0], [400, 200, 100, 50])
IMBALANCED_NONMEMBERS = np.repeat([0.0, 1.0, 2.0, 3.0], [100, 100, 100, 100])
IMBALANCED_TARGETS = np.array([0.5, 1.5, 2.5, 3.5])


def test_authors_attack_uses_no_class_weights():
    assert mia.authors_efficacy(IMBALANCED_MEMBERS, IMBALANCED_NONMEMBERS, IMBALANCED_TARGETS) == 50.0
    balanced = mia.attack_efficacy(IMBALANCED_MEMBERS, IMBALANCED_NONMEMBERS, IMBALANCED_TARGETS, "logreg")
    assert balanced == 75.0
    # 750 members and 750 non-members, odds 1/8, 1/2, 2, 8: log-odds 2 ln 2 (loss - 1.5), boundary 1.5 for both
    # (the class weights are then all 1)
    members = np.repeat([0.0, 1.0, 2.0, 3.0], [400, 200, 100, 50])
    nonmembers = np.repeat([0.0, 1.0, 2.0, 3.0], [50, 100, 200, 400])
    targets = np.array([0.5, 1.2, 1.8, 2.5, 3.5])
    assert mia.authors_efficacy(members, nonmembers, targets) == 60.0
    assert mia.attack_efficacy(members, nonmembers, targets, "logreg") == 60.0


def test_authors_subsets_take_their_slices():
    # CIFAR-10 with one class forgotten: 45,000 retain samples -> 9,000; 9,000 test samples -> 5,000
    members, nonmembers = mia.authors_subsets(np.arange(45_000), np.arange(50_000, 59_000), seed=0)
    assert len(members) == 9_000 and len(nonmembers) == 5_000
    assert len(set(members)) == 9_000 and set(nonmembers) <= set(range(50_000, 59_000))
    perm = np.random.default_rng(0).permutation(np.arange(45_000))
    expected = np.concatenate([perm[5000 * k: 5000 * k + 1000] for k in range(9)])
    np.testing.assert_array_equal(members, np.sort(expected))
    again = mia.authors_subsets(np.arange(45_000), np.arange(50_000, 59_000), seed=0)
    np.testing.assert_array_equal(members, again[0])
    assert not np.array_equal(members, mia.authors_subsets(np.arange(45_000), np.arange(10), seed=1)[0])
    # two classes forgotten (40,000: the last slice is empty) and a small data set (everything fits)
    assert len(mia.authors_subsets(np.arange(40_000), np.arange(8_000), seed=0)[0]) == 8_000
    small = mia.authors_subsets(np.arange(700), np.arange(300), seed=0)
    np.testing.assert_array_equal(small[0], np.arange(700))
    np.testing.assert_array_equal(small[1], np.arange(300))
    # 1,293 retain samples: only the first slice, 1,000 of them
    assert len(mia.authors_subsets(np.arange(1_293), np.arange(300), seed=0)[0]) == 1_000

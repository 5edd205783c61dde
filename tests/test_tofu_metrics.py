"""TOFU's metrics (prunelora.metrics.tofu) on hand-worked values, and against open-unlearning's expressions.

The hand cases show their arithmetic. The last section transcribes open-unlearning's expressions
(locuslab/open-unlearning @ d3d7cf9, src/evals/metrics/...) into small reference functions and checks ours
against them on seeded random inputs.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from prunelora.metrics import tofu

# --- truth ratio -------------------------------------------------------------------------------------------


def test_truth_ratio_is_geometric_mean_of_wrong_over_true():
    # question 0: nll_true 0.5, wrong 1.0 / 2.0 / 3.0 -> mean 2.0 -> R = e^-2 / e^-0.5 = e^-1.5 = 0.2231302
    #   an arithmetic mean of probabilities: (e^-1 + e^-2 + e^-3)/3 / e^-0.5 = 0.1843340 / 0.6065307 = 0.3039148
    #   true over wrong: e^1.5 = 4.4816891
    # question 1: nll_true 2.0, wrong 0.2 / 0.4 / 0.9 -> mean 0.5 -> R = e^-0.5 / e^-2 = e^1.5 = 4.4816891 (> 1)
    r = tofu.truth_ratios(np.array([0.5, 2.0]), np.array([[1.0, 2.0, 3.0], [0.2, 0.4, 0.9]]))
    assert r.shape == (2,)
    assert r[0] == pytest.approx(0.22313016, rel=1e-7)
    assert r[1] == pytest.approx(4.48168907, rel=1e-7)
    assert r[0] != pytest.approx(0.3039148, rel=1e-3)  # not the arithmetic mean of probabilities
    assert r[0] != pytest.approx(4.4816891, rel=1e-3)  # not true over wrong


def test_truth_ratio_keeps_their_guard_when_the_true_answer_is_gone():
    # nll_true 30 -> p_true = e^-30 = 9.36e-14, far below the guard 1e-10; nll_wrong 1 -> p_wrong = e^-1
    # theirs: e^-1 / (9.36e-14 + 1e-10) = 0.3678794 / 1.000936e-10 = 3.675354e9 (a log-space ratio gives 2.9e12)
    r = tofu.truth_ratios(np.array([30.0]), np.array([[1.0, 1.0]]))
    assert r[0] == pytest.approx(math.exp(-1) / (math.exp(-30) + 1e-10), rel=1e-12)
    assert r[0] == pytest.approx(3.675354e9, rel=1e-6)


def test_truth_ratio_reads_one_wrong_answer_and_rejects_mismatched_sizes():
    # (N,) wrong losses are K = 1: R = e^-1 / e^-0.25 = e^-0.75 = 0.4723666
    assert tofu.truth_ratios(np.array([0.25]), np.array([1.0]))[0] == pytest.approx(0.47236655, rel=1e-7)
    with pytest.raises(ValueError):
        tofu.truth_ratios(np.array([0.5, 1.0]), np.array([[1.0, 2.0]]))


def test_truth_ratio_aggregators():
    r = np.array([0.5, 1.0, 2.0, 4.0])
    # closer_to_1_better: min(R, 1/R) = 0.5, 1, 0.5, 0.25 -> 2.25 / 4 = 0.5625
    assert tofu.truth_ratio_summary(r, "closer_to_1_better") == pytest.approx(0.5625, rel=1e-9)
    # true_better: max(0, 1 - R) = 0.5, 0, 0, 0 -> 0.5 / 4 = 0.125
    assert tofu.truth_ratio_summary(r, "true_better") == pytest.approx(0.125, abs=1e-12)
    # ratios swapped (1/R = 2, 1, 0.5, 0.25) score differently on true_better: 0, 0, 0.5, 0.75 -> 0.3125
    assert tofu.truth_ratio_summary(1 / r, "true_better") == pytest.approx(0.3125, abs=1e-12)
    with pytest.raises(ValueError, match="aggregator"):
        tofu.truth_ratio_summary(r, "closer_to_one")
    with pytest.raises(ValueError):
        tofu.truth_ratio_summary(r, "prob_mean")  # theirs, with another ratio: not provided here


# --- forget quality, model utility, normalised probability ---------------------------------------------------


def test_forget_quality_ks_p_values():
    # identical samples: D = 0 -> p = 1
    assert tofu.forget_quality(np.array([0.2, 0.5, 0.9]), np.array([0.2, 0.5, 0.9])) == pytest.approx(1.0)
    # fully separated 3 vs 3: D = 1; exact two-sided p = 2 orderings of the C(6, 3) = 20 -> 0.1
    assert tofu.forget_quality(np.array([0.1, 0.2, 0.3]), np.array([4.0, 5.0, 6.0])) == pytest.approx(0.1)
    assert tofu.forget_quality(np.array([4.0, 5.0, 6.0]), np.array([0.1, 0.2, 0.3])) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        tofu.forget_quality(np.array([]), np.array([1.0]))


def test_model_utility_is_a_harmonic_mean():
    # 2 / (1/1 + 1/0.5) = 2 / 3 (an arithmetic mean would be 0.75)
    assert tofu.model_utility([1.0, 0.5]) == pytest.approx(2 / 3, rel=1e-12)
    # a zero component -> 0
    assert tofu.model_utility([1.0, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError):
        tofu.model_utility([])


def test_normalised_probability_sums_the_wrong_answers():
    # q0: 0.5 / (0.5 + 0.1 + 0.2 + 0.2) = 0.5; q1: 0.2 / (0.2 + 0.3 + 0.3 + 0.2) = 0.2 -> mean 0.35
    #   averaging the wrong answers instead: 0.5 / 0.6667 = 0.75 and 0.2 / 0.4667 = 0.4286 -> 0.589
    p = tofu.normalised_probability(np.array([0.5, 0.2]), np.array([[0.1, 0.2, 0.2], [0.3, 0.3, 0.2]]))
    assert p == pytest.approx(0.35, rel=1e-9)
    with pytest.raises(ValueError):
        tofu.normalised_probability(np.array([0.5]), np.array([[0.1], [0.2]]))


# --- extraction strength, exact memorisation --------------------------------------------------------------------

LABELS = [7, 8, 9, 10]


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ([7, 8, 9, 10], 1.0),  # suffix from 0 matches: 1 - 0/4
        ([0, 8, 9, 10], 0.75),  # from 1: 1 - 1/4
        ([0, 0, 9, 10], 0.5),  # from 2: 1 - 2/4
        ([0, 8, 0, 10], 0.25),  # from 3 (the 8 at 1 does not count: 9 at 2 breaks it): 1 - 3/4
        ([0, 0, 0, 0], 0.25),  # none: the loop ends on k = 3 -> 1/|a| = 0.25, not 0
        ([7, 8, 9, 0], 0.25),  # matches from 0 but the last token breaks it: same as none
        ([7, 0, 9, 10], 0.5),  # matches at 0, breaks at 1: the suffix from 2 counts -> 1 - 2/4
        ([7, 8, 0, 10], 0.25),  # breaks at 2: suffix from 3 -> 1 - 3/4
    ],
)
def test_extraction_strength_by_position(predicted, expected):
    assert tofu.extraction_strength(predicted, LABELS) == pytest.approx(expected, abs=1e-12)


def test_extraction_strength_edge_cases():
    assert tofu.extraction_strength([5], [5]) == 1.0
    assert tofu.extraction_strength([4], [5]) == 1.0  # one token, wrong: the loop's k stays 0 -> 1 - 0/1
    assert tofu.extraction_strength([], []) == 0.0  # theirs appends 0 for an empty answer
    with pytest.raises(ValueError):
        tofu.extraction_strength([1, 2], [1, 2, 3])


def test_exact_memorization():
    # matches at 0 and 2 of 4 -> 2/4
    assert tofu.exact_memorization([7, 0, 9, 0], LABELS) == 0.5
    assert tofu.exact_memorization(LABELS, LABELS) == 1.0
    assert tofu.exact_memorization([1, 2, 3, 4], LABELS) == 0.0
    assert tofu.exact_memorization([], []) is None


# --- min-k, AUC, privleak --------------------------------------------------------------------------------------


def test_min_k_score():
    lp = np.array([-0.1, -2.0, -0.5, -3.0, -1.0])
    # k 0.4: int(5 * 0.4) = 2 lowest -> -3.0, -2.0 -> -(-2.5) = 2.5
    assert tofu.min_k_score(lp, 0.4) == pytest.approx(2.5)
    # k 0.2: int(1.0) = 1 -> 3.0; k 0.1: int(0.5) = 0 -> at least 1 -> 3.0
    assert tofu.min_k_score(lp, 0.2) == pytest.approx(3.0)
    assert tofu.min_k_score(lp, 0.1) == pytest.approx(3.0)
    # T = 3, k 0.4: int(1.2) = 1 (a ceil would take 2: -(-4 - 2)/2 = 3.0) -> 4.0
    assert tofu.min_k_score(np.array([-1.0, -2.0, -4.0]), 0.4) == pytest.approx(4.0)
    assert tofu.min_k_score(np.array([]), 0.4) == 0.0


def test_auc_members_on_loss_like_scores():
    # members (forget) score lower (more likely) than every non-member -> 1.0; the other way -> 0.0
    assert tofu.auc_members([0.1, 0.2], [0.3, 0.4]) == pytest.approx(1.0)
    assert tofu.auc_members([0.3, 0.4], [0.1, 0.2]) == pytest.approx(0.0)
    # pairs member < non-member: (0.1, 0.3) (0.1, 0.4) (0.35, 0.4) of 4 -> 0.75
    assert tofu.auc_members([0.1, 0.35], [0.3, 0.4]) == pytest.approx(0.75)
    # a tie counts one half: (0.3 vs 0.3) 0.5 + (0.3 vs 0.5) 1 -> 1.5 / 2 = 0.75
    assert tofu.auc_members([0.3], [0.3, 0.5]) == pytest.approx(0.75)


def test_privleak_sign_convention():
    # ((1 - AUC) - (1 - ref)) / (1 - ref) * 100
    assert tofu.privleak(0.5, 0.5) == pytest.approx(0.0, abs=1e-9)
    # AUC 1.0 against 0.5: (0 - 0.5) / (0.5 + 1e-10) * 100 = -99.99999998
    assert tofu.privleak(1.0, 0.5) == pytest.approx(-100.0, rel=1e-8)
    assert tofu.privleak(1.0) == pytest.approx(-100.0, rel=1e-8)  # default reference: their ref_value 0.5
    # AUC 0.0 against 0.5: (1 - 0.5) / 0.5 * 100 = +100
    assert tofu.privleak(0.0, 0.5) == pytest.approx(100.0, rel=1e-8)
    # AUC 0.75 against 0.6: (0.25 - 0.4) / 0.4 * 100 = -37.5 (their rel_diff on the AUC would give +25)
    assert tofu.privleak(0.75, 0.6) == pytest.approx(-37.5, rel=1e-8)


def test_import_loads_neither_scipy_nor_sklearn():
    code = "import sys, prunelora.metrics.tofu; print(sorted(m for m in ('scipy', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- open-unlearning's expressions, transcribed, on random inputs --------------------------------------------


def _ou_aggregate_to_1d(x):  # utils.aggregate_to_1D
    return np.mean(x, axis=tuple(range(1, x.ndim)))


def _ou_truth_ratio(correct_avg_losses, wrong_avg_losses):  # memorization.truth_ratio
    correct_prob = np.exp(-_ou_aggregate_to_1d(np.array(correct_avg_losses)))
    wrong_prob = np.exp(-_ou_aggregate_to_1d(np.array(wrong_avg_losses)))
    return wrong_prob / (correct_prob + 1e-10)


def _ou_closer_to_1_better(arr):
    return np.mean(np.minimum(arr, 1 / (arr + 1e-10)))


def _ou_true_better(arr):
    return np.mean(np.maximum(0, 1 - arr))


def _ou_probability_w_options(correct, all_wrong):
    wrong = np.sum(all_wrong, axis=tuple(range(1, all_wrong.ndim)))
    return np.mean(correct / (correct + wrong + 1e-10))


def _ou_extraction_strength(preds, labels):
    valid_len = len(labels)
    for k in range(valid_len):
        if np.array_equal(preds[k:], labels[k:]):
            break
    if valid_len == 0:
        return 0
    return 1 - (k / valid_len)


def _ou_exact_memorization(preds, labels):
    return None if len(labels) == 0 else (preds == labels).sum() / len(labels)


def _ou_min_k(lp, k):
    if lp.size == 0:
        return 0
    num_k = max(1, int(len(lp) * k))
    return -np.mean(np.sort(lp)[:num_k])


def _ou_mia_auc(forget_scores, holdout_scores):
    from sklearn.metrics import roc_auc_score

    scores = np.array(list(forget_scores) + list(holdout_scores))
    labels = np.array([0] * len(forget_scores) + [1] * len(holdout_scores))
    return roc_auc_score(labels, scores)


def _ou_privleak(score, ref):
    score = 1 - score
    ref = 1 - ref
    return (score - ref) / (ref + 1e-10) * 100


def test_matches_open_unlearning_truth_ratio_quality_and_utility():
    from scipy import stats

    rng = np.random.default_rng(20240611)
    n, k = 40, 5
    nll_true = rng.uniform(0.05, 4.0, n)
    nll_true[:3] = [26.0, 31.0, 40.0]  # below the 1e-10 guard
    nll_wrong = rng.uniform(0.05, 4.0, (n, k))
    ours = tofu.truth_ratios(nll_true, nll_wrong)
    theirs = _ou_truth_ratio(nll_true, nll_wrong)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    for agg, ref in (("closer_to_1_better", _ou_closer_to_1_better), ("true_better", _ou_true_better)):
        assert tofu.truth_ratio_summary(ours, agg) == pytest.approx(ref(theirs), rel=1e-12)

    retrain = _ou_truth_ratio(rng.uniform(0.05, 4.0, n), rng.uniform(0.05, 4.0, (n, k)))
    p = tofu.forget_quality(ours, retrain)
    assert p == pytest.approx(stats.ks_2samp(theirs, retrain).pvalue, rel=1e-12)  # privacy.ks_test
    # their unused utils.get_forget_quality (on 1 / R) gives the same p-value
    assert p == pytest.approx(stats.ks_2samp(1 / (theirs + 1e-10), 1 / (retrain + 1e-10)).pvalue, rel=1e-9)

    parts = rng.uniform(0.01, 1.0, 9)
    assert tofu.model_utility(parts) == pytest.approx(stats.hmean(parts), rel=1e-12)  # utility.hm_aggregate

    p_true = np.exp(-nll_true)
    p_wrong = np.exp(-nll_wrong)
    assert tofu.normalised_probability(p_true, p_wrong) == pytest.approx(
        _ou_probability_w_options(p_true, p_wrong), rel=1e-12
    )


def test_matches_open_unlearning_token_metrics():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(0, 9))
        labels = rng.integers(0, 3, n)
        # mostly right, so that suffixes of every length match now and then
        preds = np.where(rng.random(n) < 0.75, labels, rng.integers(0, 3, n))
        assert tofu.extraction_strength(preds, labels) == pytest.approx(_ou_extraction_strength(preds, labels))
        em, ref = tofu.exact_memorization(preds, labels), _ou_exact_memorization(preds, labels)
        assert (em is None and ref is None) or em == pytest.approx(ref)


def test_matches_open_unlearning_min_k_auc_privleak():
    rng = np.random.default_rng(11)
    for _ in range(200):
        lp = -rng.exponential(1.5, int(rng.integers(0, 30)))
        k = float(rng.choice([0.1, 0.2, 0.29, 0.4, 0.7, 1.0]))
        assert tofu.min_k_score(lp, k) == pytest.approx(_ou_min_k(lp, k), rel=1e-12)

    forget = [tofu.min_k_score(-rng.exponential(0.8, 20), 0.4) for _ in range(25)]
    holdout = [tofu.min_k_score(-rng.exponential(1.2, 20), 0.4) for _ in range(30)]
    auc = tofu.auc_members(forget, holdout)
    assert auc == pytest.approx(_ou_mia_auc(forget, holdout), rel=1e-12)
    assert 0.5 < auc <= 1.0  # members (lower loss-like scores) read as members
    for a, ref in ((auc, 0.5), (0.9, 0.62), (0.3, 0.45), (1.0, 0.5)):
        assert tofu.privleak(a, ref) == pytest.approx(_ou_privleak(a, ref), rel=1e-12)

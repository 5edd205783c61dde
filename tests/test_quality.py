"""The challenge's forgetting-quality score and KLOM on confidences built by hand, each value worked out on paper
(delta = 1e-5, so a rate pair (FPR, FNR) proves epsilon = max(ln(1 - delta - FPR) - ln FNR, ln(1 - delta - FNR) -
ln FPR))."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunelora.metrics import quality as Q

D = Q.DELTA


def test_one_threshold_with_one_error_each_way():
    """u: 0 1 2 3, r: 2.5 4 5 6. Retrained has the larger median, so "phi >= t means retrained". The cut between
    2.5 and 3 misses r=2.5 (FNR 1/4) and takes u=3 (FPR 1/4): ln(0.75 - delta) - ln(0.25) = ln(3 - 4 delta). No cut
    and no interval separates the two sets (2.5 lies inside the unlearned range, 3 inside the retrained one)."""
    u, r = np.array([0.0, 1, 2, 3]), np.array([2.5, 4, 5, 6])
    assert Q.sample_epsilon(u, r) == pytest.approx(math.log(3 - 4 * D), abs=1e-12)


def test_no_rule_does_better_than_two_errors_against_one():
    """u: 0 1 4 5, r: 2 3 6 7 (sorted: u u r r u u r r). Cuts give (FP, FN) = (2, 1) or (1, 2) at best; an interval of
    length 3 to 7 (the spread 5 +- 2) around three u's always holds both r's between them. (2/4, 1/4) proves
    ln(0.5 - delta) - ln(0.25) = ln(2 - 4 delta), which beats ln(1.5 - 2 delta) the other way round."""
    u, r = np.array([0.0, 1, 4, 5]), np.array([2.0, 3, 6, 7])
    assert Q.sample_epsilon(u, r) == pytest.approx(math.log(2 - 4 * D), abs=1e-12)
    assert Q.sample_epsilon(r, u) == pytest.approx(math.log(2 - 4 * D), abs=1e-12)  # symmetric in the two sides


def test_an_interval_separates_what_no_single_threshold_can():
    """u: 4 4.5 5 5.5 sits between r's 0 2 and 8 10. The best cut is (FP, FN) = (1, 2): ln(2 - 4 delta); the interval
    [3.5, 6] holds every u and no r: perfect separation, epsilon infinite, clipped to 50."""
    u, r = np.array([4.0, 4.5, 5, 5.5]), np.array([0.0, 2, 8, 10])
    single = Q.single_threshold_counts(r, u)  # r has the larger median (5 against 4.75)
    assert Q.epsilon_of_counts(single, 4) == pytest.approx(math.log(2 - 4 * D), abs=1e-12)
    assert Q.epsilon_of_counts(Q.double_threshold_counts(r, u), 4) == math.inf
    assert Q.sample_epsilon(u, r) == 50.0


def test_rules_with_one_rate_zero_prove_nothing_and_both_zero_prove_everything():
    assert Q.epsilon_of_counts(np.array([[0, 1], [3, 0]]), 4) == 0.0  # left out: too few models to tell
    assert Q.epsilon_of_counts(np.array([[0, 0], [1, 1]]), 4) == math.inf
    assert Q.epsilon_of_counts(np.array([[4, 4]]), 4) == 0.0  # rates of 1: both bounds are logs of negatives
    assert Q.epsilon_of_counts(np.array([[2, 2]]), 4) == 0.0  # ln(0.5 - delta) - ln 0.5 < 0, clipped to 0


def test_spikes_and_constants():
    """A side 100x narrower than the other is a spike the grid cannot resolve: the cap. Two constant sides tell
    everything apart when they differ and nothing when they agree."""
    assert Q.sample_epsilon(np.array([1.0, 1, 1, 1.001]), np.array([0.0, 1, 2, 3])) == 50.0
    assert Q.sample_epsilon(np.full(4, 2.0), np.full(4, 2.0)) == 0.0
    assert Q.sample_epsilon(np.full(4, 2.0), np.full(4, 3.0)) == 50.0
    assert Q.sample_epsilon(np.full(4, 2.0), np.array([0.0, 1, 2, 3])) == 50.0  # one side constant: a spike


def test_buckets_and_the_forget_score():
    """N = 4: buckets end at ceil(ln 3) = 2, so [0, .5) 1 point, [.5, 1) 1/2, [1, 1.5) 1/4, [1.5, 2) 1/8, then 0.
    N = 3: they end at ceil(ln 2) = 1."""
    eps = np.array([0.0, 0.4999, 0.5, 0.999, 1.0, math.log(3 - 4 * D), 1.5, 1.99, 2.0, 50.0])
    np.testing.assert_array_equal(Q.bucket_points(eps, 4), [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0, 0])
    assert Q.forget_score(eps, 4) == pytest.approx(3.75 / 10)
    np.testing.assert_array_equal(Q.bucket_points(np.array([0.2, 0.7, 1.0]), 3), [1, 0.5, 0])
    assert Q.forget_score(np.array([0.0, math.log(2 - 4 * D), math.log(3 - 4 * D), 50.0]), 4) == pytest.approx(0.4375)
    assert Q.final_score(0.5, 90.0, 100.0, 80.0, 100.0) == pytest.approx(0.36)


def test_resolution_of_four_models():
    """With 4 models a side, rates are quarters: the only finite epsilons are 0, ln(2 - 4 delta) and
    ln(3 - 4 delta), worth 1, 1/2 and 1/4 points; two draws of one distribution score about 0.26, not 1."""
    res = Q.resolution(4)
    assert res["distinct_epsilons"] == [0.0, round(math.log(2 - 4 * D), 6), round(math.log(3 - 4 * D), 6)]
    assert res["largest_finite_epsilon"] == round(math.log(3 - 4 * D), 6)
    assert res["buckets"] == 4 and res["smallest_points"] == 0.25
    assert res["chance_ceiling"] == pytest.approx(0.255)  # seeded draws: the same on any machine


def test_retrain_against_retrain_is_at_the_top_and_the_original_at_the_bottom():
    """Hand-built phi for 200 forget samples: 'retrained' models draw phi ~ N(-6, 1) per sample, a second set of
    retrained models the same, the 'original' is sure of every sample (phi ~ N(+8, 1)). Retrain against retrain
    scores at the chance ceiling of 4 models; the original is perfectly separated on every sample: F = 0."""
    rng = np.random.default_rng(1)
    retrained, other = rng.normal(-6, 1, (4, 200)), rng.normal(-6, 1, (4, 200))
    original = rng.normal(8, 1, (4, 200))
    same = Q.forget_score(Q.epsilons(other, retrained), 4)
    assert abs(same - Q.chance_ceiling(4)) < 0.05
    assert Q.forget_score(Q.epsilons(original, retrained), 4) == 0.0


def test_klom_hand_values():
    """Margins 0 0 1 1 against 0 0 0 0: 20 bins over [0, 1]; p = (1/2, 0, ..., 0, 1/2), q = (1, 0, ...) raised to
    (1, ..., 1e-5) / (1 + 1e-5): KL = 1/2 ln(1/2 (1 + 1e-5)) + 1/2 ln(1/2 (1 + 1e-5) / 1e-5)."""
    expected = 0.5 * math.log(0.5 * (1 + 1e-5)) + 0.5 * math.log(0.5 * (1 + 1e-5) / 1e-5)
    assert Q.klom_sample(np.array([0.0, 0, 1, 1]), np.zeros(4)) == pytest.approx(expected, rel=1e-12)
    assert Q.klom_sample(np.array([0.0, 1, 2, 3]), np.array([3.0, 2, 1, 0])) == 0.0  # the same histogram
    assert Q.klom_sample(np.zeros(4), np.ones(4)) == pytest.approx(math.log(1e5 + 1), rel=1e-12)  # disjoint
    assert Q.klom_sample(np.full(4, 500.0), np.full(4, 100.0)) == 0.0  # both clipped to 100: one bin
    # per sample (columns): margins 0 1 against 0 0 is the first case again; 0 0 against 0 0 is one bin
    np.testing.assert_allclose(Q.klom(np.array([[0.0, 0], [1, 0]]), np.zeros((2, 2))), [expected, 0.0], rtol=1e-12)


def test_leak_list_orders_by_epsilon_then_by_distance():
    eps = np.array([0.0, 50.0, 50.0, 1.1])
    unlearned = np.array([[0.0, 5, 9, 1]] * 4)
    retrained = np.zeros((4, 4))
    leaks = Q.leak_list(eps, unlearned, retrained, np.array([10, 11, 12, 13]), np.array([3, 3, 1, 3]),
                        ["a", "b", "c", "d"], count=3)
    assert [(x["id"], x["class"], x["epsilon"]) for x in leaks] == [(12, "b", 50.0), (11, "d", 50.0), (13, "d", 1.1)]
    assert leaks[0]["phi_unlearned"] == 9.0 and leaks[0]["phi_retrained"] == 0.0


def test_bootstrap_interval():
    assert Q.bootstrap_interval(np.full(50, 0.25), seed=0) == (0.25, 0.25)
    points = np.array([0.0, 1.0] * 100)
    low, high = Q.bootstrap_interval(points, seed=0)
    assert low < 0.5 < high and high - low < 0.2  # +- 2 standard errors of 0.035
    assert Q.bootstrap_interval(points, seed=0) == (low, high)


# ---------------------------------------------------------------- the registered metrics, wired to a run


def _logits(labels: np.ndarray, phi: np.ndarray, classes: int = 10) -> np.ndarray:
    """Logits whose logit-scaled confidence is phi[i] for sample i: others 0, the true class ln(C - 1) + phi."""
    z = np.zeros((len(labels), classes))
    z[np.arange(len(labels)), labels] = np.log(classes - 1) + phi
    return z


def test_metric_on_hand_built_models(tiny_cfg, tiny_data, cpu_ctx, monkeypatch):
    """4 models a side, every retain and test sample at phi +5 (right), except the first unlearned model, wrong on
    the first 10% of the retain set (phi -5): RA 90, 100, 100, 100 against 100, so the final score is
    F x 0.975. Forget samples: retrained phi 0, 1, 2, 3 on every sample; unlearned the same on the second half
    (epsilon 0: 1 point) and 20 higher on the first half (perfectly told apart: 0 points). F = 0.5."""
    from prunelora.metrics.evidence import EvidenceInput
    from prunelora.workflows import bank as ensembles

    data, splits = tiny_data
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    forget, retain = splits.forget.numpy(), splits.retain.numpy()
    half = len(forget) // 2

    def model(k: int, shift: float, wrong: int = 0):
        phi = np.full(len(y_train), 5.0)
        phi[forget] = k
        phi[forget[:half]] += shift
        phi[retain[:wrong]] = -5.0
        return _logits(y_train, phi), _logits(y_test, np.full(len(y_test), 5.0))

    unlearned = [model(0, 20.0, wrong=len(retain) // 10)] + [model(k, 20.0) for k in range(1, 4)]
    retrained = [model(k, 0.0) for k in range(4)]
    monkeypatch.setattr(ensembles, "ensemble", lambda own, inputs: (unlearned, retrained))
    inputs = EvidenceInput(data, splits, cpu_ctx, tiny_cfg.eval, tiny_cfg, method="finetune")
    m = Q.forgetting_quality_metric(None, unlearned[0], inputs)
    ra = (100.0 * (1 - (len(retain) // 10) / len(retain)) + 300.0) / 400.0
    assert m["quality_F"] == 0.5 and m["quality_models"] == 4
    assert m["quality_score"] == pytest.approx(0.5 * ra, rel=1e-12)
    assert m["quality_leaking"] == pytest.approx(100.0 * half / len(forget))
    assert m["quality_F_low"] < 0.5 < m["quality_F_high"]
    assert [x["id"] for x in m["quality_leaks"]] == forget[:10].tolist()  # ties at 50 and a gap of 20: in order
    assert {x["class"] for x in m["quality_leaks"]} == {data.classes[3]} and m["quality_leaks"][0]["epsilon"] == 50.0
    k = Q.klom_metric(None, unlearned[0], inputs)
    # forget, second half: the same histogram, 0. First half: 20 bins of 23/20 over [0, 23]; unlearned 20 21 22 23
    # fall in bins 17, 18, 19, 19 (p = 1/4, 1/4, 1/2), retrained 0 1 2 3 in bins 0, 0, 1, 2: disjoint, so the three
    # bins p uses get 1e-5 each, renormalised by 1 + 3e-5: KL = -H(p) + ln((1 + 3e-5) / 1e-5) = ln(1e5 + 3) - 1.5 ln 2
    assert k["KLOM_forget"] == pytest.approx(half / len(forget) * (math.log(1e5 + 3) - 1.5 * math.log(2)), rel=1e-12)
    assert k["KLOM_test"] == 0.0


def test_quality_in_a_tiny_run(tiny_overrides, tmp_path):
    """End to end on the tiny digits set: the unlearned side of `original` is 4 originals of different seeds, each
    sure of its forgotten digits; a retrain's are retrains, scored against the shadows. How far apart they land
    moves with the CPU at this size, so only the order is asserted (retrain scores above the original, the original
    leaks more), with the ranges every score must lie in; the report lists what leaks."""
    from prunelora.config import load_config
    from prunelora.metrics.catalog import EVIDENCE
    from prunelora.report.tables import markdown_report
    from prunelora.workflows import bank as ensembles
    from prunelora.workflows.run import run
    from test_registries import produced_keys_without_a_column

    every = ",".join(EVIDENCE.names())  # every evidence metric: each key it produces must have a column
    cfg = load_config(overrides=[*tiny_overrides, "methods=[retrain]", f"eval.evidence=[{every}]",
                                 "eval.curves=false", "eval.quality_leaks=3"])
    results = run(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert produced_keys_without_a_column(results) == set()
    m = {r["method"]: r["metrics"] for r in results["runs"]}
    assert 0 <= m["original"]["quality_F"] < m["retrain"]["quality_F"] <= 1
    assert 100 >= m["original"]["quality_leaking"] > m["retrain"]["quality_leaking"] >= 0
    assert m["retrain"]["KLOM_forget"] < m["original"]["KLOM_forget"]
    assert len(m["original"]["quality_leaks"]) == 3 and m["original"]["quality_time_s"] > 0
    assert [ensembles.quality_seed(0, k) for k in range(4)] == [0, 1_000_003, 2_000_006, 3_000_009]
    report = markdown_report(results)
    assert "## Forgetting quality" in report and "### Samples that still leak" in report
    assert f"- original (seed 0): {m['original']['quality_leaks'][0]['id']} (3, " in report


def test_a_sequence_is_refused_and_n_is_checked():
    from prunelora.config import load_config
    from prunelora.errors import UserError
    from prunelora.workflows.resolve import resolve_config

    with pytest.raises(UserError, match="eval.evidence=klom scores one request, not a sequence"):
        resolve_config(load_config(overrides=["eval.evidence=[klom]", "forget.sequence=[[1],[2]]"]))
    with pytest.raises(UserError, match="eval.quality_models is 2; it must be at least 3"):
        load_config(overrides=["eval.quality_models=2"])

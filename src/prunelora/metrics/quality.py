"""The field's forgetting-quality scores, from N unlearned and N retrained models: the NeurIPS 2023 machine-unlearning
challenge's per-sample epsilon, its forgetting score F and final score (google-deepmind/unlearning_evaluation), and
KLOM, the KL divergence of margins (Georgiev et al. 2024, "Attribute-to-Delete", appendix E.1).

For every forget sample x the statistic is the logit-scaled confidence phi(x) = log p_y - log(1 - p_y) (for KLOM the
same number is called the margin: z_y - logsumexp_{j != y} z_j). Under the N unlearned models it takes N values, under
the N retrained models N others. A decision rule that calls a value "unlearned" or "retrained" has a false positive
rate (FPR) and a false negative rate (FNR); (epsilon, delta)-indistinguishability bounds both, and the tightest
epsilon a rule family proves is

    epsilon(x) = max over rules of max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR),

over two families: one threshold (values above it are the class with the larger median) and two thresholds (values
inside an interval are the narrower distribution). Rules with FPR = 0 or FNR = 0 (but not both) are discarded as
too few samples to tell; a rule with both 0 separates the two sets perfectly: epsilon is infinite. Each epsilon falls
in a bucket of width 0.5 worth 1, 1/2, 1/4, ... points; F is the mean over forget samples, 1 = indistinguishable
from retraining, 0 = every sample gives itself away. The final score is F x (RA / RA of retrain) x (TA / TA of
retrain), accuracies averaged over the N models of each side.

phi is exact by default (`attack.logit_confidence`, from the logits). `eval.quality_phi=challenge` computes it as the
challenge's code does (`compute_logit_scaled_confidence` in its metric.py): log(p_y + 1e-45) - log(sum_{i != y} p_i +
1e-45) from a softmax exponentiated in the logits' own precision, which bounds phi to +-ln(1e45) = +-103.6 and bends it
near there: for comparing F with the challenge's leaderboard. KLOM always uses the exact margin, as its reference
does. docs/metrics.md lists every departure from the references.

Pure numpy: the models behind the confidences are trained in `ensembles.py`.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

DELTA = 1e-5  # the challenge's delta of (epsilon, delta)-indistinguishability
EPSILON_CAP = 50.0  # epsilons are clipped to [0, 50]; an infinite one (perfect separation) becomes 50
STEPS_PER_UNIT = 100  # thresholds per unit of phi (the challenge's grid: 0.01 apart)
BUFFER = 2.0  # how far past the narrower distribution the two-threshold rule's interval ends may lie, in phi units
PEAKY_RATIO = 0.01  # one spread below 1% of the other: the narrow side is a spike, epsilon = the cap
BUCKET = 0.5  # width of an epsilon bucket
KLOM_BINS = 20  # histogram bins of KLOM over the pooled range of a sample's margins
KLOM_CLIP = 100.0  # margins clipped to [-100, 100] before binning
KLOM_FLOOR = 1e-5  # probability given to an empty retrained bin where the unlearned histogram has mass
PHI_FORMS = ("exact", "challenge")  # eval.quality_phi: how phi is read off the logits
CHALLENGE_FLOOR = 1e-45  # what the challenge's code adds to both probabilities before taking their logs


# ---------------------------------------------------------------- phi


def phi(logits: np.ndarray, labels: np.ndarray, form: str = "exact") -> np.ndarray:
    """Per-sample phi of logits (N, C): exact (z_y - logsumexp_{i != y} z_i, unbounded) or as the challenge computes
    it (`challenge_phi`)."""
    from .attack import logit_confidence

    if form == "exact":
        return logit_confidence(logits, labels)
    if form == "challenge":
        return challenge_phi(logits, labels)
    raise ValueError(f"phi form {form!r} is not one of {PHI_FORMS}")


def challenge_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi as the challenge's scoring code has it: the logits shifted by their row maximum and exponentiated in their
    own dtype (float32 for a network's outputs: exp underflows to subnormals past a gap of 87 and to 0 past 104), then
    normalised in float64; log(p_y + 1e-45) - log(sum_{i != y} p_i + 1e-45), which never leaves +-ln(1e45) =
    +-103.6. It is the exact phi to 1e-12 from float64 logits while |phi| < 75 (the floor shifts a log by about
    1e-45 / p) and to float32 rounding (1e-7) from float32 ones while |phi| < 87; past that it bends toward the
    bound. `logits` is left as it is (the reference shifts its input in place)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted).astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    right = p[rows, labels]
    p[rows, labels] = 0.0  # the sum over the wrong classes adds them as the reference does, not 1 - p_y
    return np.log(right + CHALLENGE_FLOOR) - np.log(p.sum(axis=1) + CHALLENGE_FLOOR)


# ---------------------------------------------------------------- the decision rules: which (FP, FN) counts occur


def single_threshold_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(thresholds, 2) counts (false positives, false negatives) of "phi >= t means positive" over the challenge's
    grid: from the smallest to the largest value of either side, 100 thresholds per unit of phi."""
    low, high = float(min(pos.min(), neg.min())), float(max(pos.max(), neg.max()))
    t = np.linspace(low, high, math.ceil((high - low) * STEPS_PER_UNIT))
    fp = (neg[None, :] >= t[:, None]).sum(1)
    fn = (pos[None, :] < t[:, None]).sum(1)
    return np.stack([fp, fn], 1)


def double_threshold_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(thresholds, 2) counts of errors of "left <= phi <= right means the narrower side" over the challenge's grid:
    right ends within BUFFER of the narrower side's largest value, interval lengths within BUFFER of its spread
    (each 100 per unit). The columns are (wide samples inside, narrow samples outside): which of them is the false
    positive does not matter, the epsilon bound is symmetric in FP and FN."""
    narrow, wide = (pos, neg) if np.ptp(pos) < np.ptp(neg) else (neg, pos)
    steps = math.ceil(2 * BUFFER * STEPS_PER_UNIT)
    top = float(narrow.max())
    right = np.linspace(top - BUFFER, top + BUFFER, steps)  # (steps,) right ends
    left = right[:, None] - float(np.ptp(narrow)) + np.linspace(-BUFFER, BUFFER, steps)[None, :]  # (steps, steps)
    caught_wide = _count_within(np.sort(wide), left, right[:, None])
    missed_narrow = len(narrow) - _count_within(np.sort(narrow), left, right[:, None])
    return np.stack([caught_wide.ravel(), missed_narrow.ravel()], 1)


def _count_within(sorted_values: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """How many of `sorted_values` lie in [left, right], elementwise (broadcast); 0 where left > right."""
    inside = np.searchsorted(sorted_values, right, side="right") - np.searchsorted(sorted_values, left, side="left")
    return np.maximum(inside, 0)


def epsilon_of_counts(counts: np.ndarray, n: int, delta: float = DELTA) -> float:
    """The largest epsilon any (FP, FN) row of `counts` proves with n models per side: infinite if a row has both
    0; rows with just one of them 0 are left out (too few models to tell); each bound is clipped at 0 from below,
    and a direction through a rate of 1 (log of a negative number) proves nothing. 0 when no row is left."""
    seen = np.bincount(counts[:, 0] * (n + 1) + counts[:, 1], minlength=(n + 1) ** 2) > 0  # distinct rows only
    fp, fn = np.divmod(np.flatnonzero(seen), n + 1)
    if np.any((fp == 0) & (fn == 0)):
        return math.inf
    both = (fp > 0) & (fn > 0)
    a, b = fp[both] / n, fn[both] / n
    bound = np.fmax(_bound(a, b, delta), _bound(b, a, delta))
    return float(max(bound.max(), 0.0)) if len(bound) else 0.0


def _bound(x: np.ndarray, y: np.ndarray, delta: float) -> np.ndarray:
    """log(1 - delta - x) - log(y), or -inf where 1 - delta - x <= 0."""
    room = 1 - delta - x
    return np.where(room > 0, np.log(np.where(room > 0, room, 1.0)) - np.log(y), -np.inf)


def sample_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> float:
    """Epsilon of one forget sample from its phi under N unlearned and N retrained models, clipped to [0, 50].
    The positive side is the one with the larger median (ties: unlearned)."""
    n = len(unlearned)
    spreads = sorted([float(np.ptp(unlearned)), float(np.ptp(retrained))])
    if spreads[1] == 0.0:  # both sides constant: the same value tells nothing apart, different values everything
        return 0.0 if unlearned[0] == retrained[0] else EPSILON_CAP
    if spreads[0] / spreads[1] < PEAKY_RATIO:  # the narrow side is a spike: the grid cannot resolve it
        return EPSILON_CAP
    pos, neg = (retrained, unlearned) if np.median(retrained) > np.median(unlearned) else (unlearned, retrained)
    counts = np.concatenate([single_threshold_counts(pos, neg), double_threshold_counts(pos, neg)])
    return min(epsilon_of_counts(counts, n, delta), EPSILON_CAP)


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Per-sample epsilon from (N models, samples) arrays of phi under unlearned and retrained models."""
    if unlearned.shape != retrained.shape or unlearned.ndim != 2:
        raise ValueError(f"expected two (models, samples) arrays of one shape, got {unlearned.shape} and {retrained.shape}")
    return np.array([sample_epsilon(unlearned[:, i], retrained[:, i], delta) for i in range(unlearned.shape[1])])


# ---------------------------------------------------------------- from epsilons to scores


def max_epsilon(n: int) -> float:
    """Where the buckets end for n models per side: ceil(ln(n - 1)), since the smallest non-zero rate is 1/n, and so
    the largest finite epsilon is ln(1 - delta - 1/n) - ln(1/n) < ln(n - 1). Epsilons from there on get 0 points."""
    return float(math.ceil(math.log(n - 1))) if n > 2 else 0.0


def bucket_points(eps: np.ndarray, n: int) -> np.ndarray:
    """Points of each epsilon: 1 in [0, 0.5), 1/2 in [0.5, 1), 1/4 in [1, 1.5), ... up to max_epsilon(n); 0 beyond."""
    buckets = round(max_epsilon(n) / BUCKET)
    index = np.floor(np.asarray(eps, dtype=np.float64) / BUCKET)
    return np.where(index < buckets, 0.5 ** np.clip(index, 0, None), 0.0)


def forget_score(eps: np.ndarray, n: int) -> float:
    """F: the mean points over forget samples (1 = as if retrained, 0 = every sample tells)."""
    return float(bucket_points(eps, n).mean())


def final_score(f: float, ra: float, ra_retrain: float, ta: float, ta_retrain: float) -> float:
    """The challenge's final score: F scaled by the utility kept, F x (RA / RA_retrain) x (TA / TA_retrain)."""
    return f * (ra / ra_retrain) * (ta / ta_retrain)


def resolution(n: int) -> dict:
    """What n models per side can tell: the largest finite epsilon (ln(1 - delta - 1/n) + ln n, just under ln(n - 1)),
    the number of buckets (an epsilon past them counts as perfect separation: 0 points), the smallest non-zero points
    a sample can earn, the distinct finite epsilons (one per pair of non-zero rates), and the chance ceiling: the F of
    two sets of n models drawn from one distribution, which is what a method as good as retraining scores."""
    values = {round(epsilon_of_counts(np.array([[a, b]]), n), 6) for a in range(1, n) for b in range(1, n)}
    largest = max(values)
    return {"models": n, "largest_finite_epsilon": largest, "buckets": round(max_epsilon(n) / BUCKET),
            "smallest_points": float(bucket_points(np.array([largest]), n)[0]), "distinct_epsilons": sorted(values),
            "chance_ceiling": chance_ceiling(n)}


@functools.lru_cache(maxsize=8)
def chance_ceiling(n: int, samples: int = 400, seed: int = 0) -> float:
    """F of n standard-normal draws against n others, over `samples` samples: with few models the largest epsilon over
    all thresholds finds a difference between two sets of one distribution, so even a perfect method scores below 1
    (n = 4: 0.255). Read F against this, not against 1."""
    rng = np.random.default_rng(seed)
    return forget_score(epsilons(rng.normal(size=(n, samples)), rng.normal(size=(n, samples))), n)


def bootstrap_interval(points: np.ndarray, seed: int, draws: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `points` over `draws` resamples of the forget samples (with replacement).
    It covers the choice of samples, not of models: with few models the resolution limit dominates."""
    rng = np.random.default_rng(seed)
    means = points[rng.integers(0, len(points), size=(draws, len(points)))].mean(1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


# ---------------------------------------------------------------- KLOM


def klom_sample(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """KL(unlearned || retrained), in nats, of one sample's margin histograms: both clipped to [-100, 100], 20 equal
    bins over their pooled range, retrained bins that are empty where the unlearned side has mass raised to 1e-5
    and the retrained histogram renormalised. 0 = the same histogram; at most about ln(1e5) = 11.5 (disjoint)."""
    u, r = np.clip(unlearned, -KLOM_CLIP, KLOM_CLIP), np.clip(retrained, -KLOM_CLIP, KLOM_CLIP)
    low, high = float(min(u.min(), r.min())), float(max(u.max(), r.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, KLOM_BINS + 1)
    p = np.histogram(u, edges)[0] / len(u)
    q = np.histogram(r, edges)[0] / len(r)
    q = np.where(p > 0, np.maximum(q, KLOM_FLOOR), q)
    q = q / q.sum()
    keep = p > 0
    return float((p[keep] * np.log(p[keep] / q[keep])).sum())


def klom(unlearned: np.ndarray, retrained: np.ndarray) -> np.ndarray:
    """Per-sample KLOM from (N models, samples) arrays of margins."""
    return np.array([klom_sample(unlearned[:, i], retrained[:, i]) for i in range(unlearned.shape[1])])


# ---------------------------------------------------------------- what still leaks


def leak_list(eps: np.ndarray, unlearned: np.ndarray, retrained: np.ndarray, ids: np.ndarray, labels: np.ndarray,
              classes: list[str], count: int) -> list[dict]:
    """The `count` forget samples with the highest epsilon (ties: the largest distance between the two sides'
    medians of phi first), each with its train-set id, class, epsilon and both medians."""
    gap = np.abs(np.median(unlearned, 0) - np.median(retrained, 0))
    order = np.lexsort((-gap, -eps))[:count]
    return [{"id": int(ids[i]), "class": classes[int(labels[i])], "epsilon": float(eps[i]),
             "phi_unlearned": float(np.median(unlearned[:, i])), "phi_retrained": float(np.median(retrained[:, i]))}
            for i in order]


# ---------------------------------------------------------------- registered evidence metrics (eval.evidence)


def forgetting_quality_metric(model, outs, inputs) -> dict:
    """The challenge's scores of the method that made `model` (`inputs.method`), from eval.quality_models unlearned
    and retrained models (`ensembles.py`); `quality_time_s` is the seconds it took, training included."""
    start = time.perf_counter()
    unlearned, retrained, labels = _phis(outs, inputs, form=inputs.config.quality_phi)
    n = len(unlearned)
    eps = epsilons(unlearned, retrained)
    points = bucket_points(eps, n)
    f = float(points.mean())
    low, high = bootstrap_interval(points, inputs.ctx.seed, inputs.config.quality_bootstrap)
    utility = _utility_ratio(outs, inputs)
    res = resolution(n)
    data, forget = inputs.data, inputs.splits.forget.numpy()
    leaks = leak_list(eps, unlearned, retrained, forget, labels, data.classes, inputs.config.quality_leaks)
    return {"quality_F": f, "quality_F_low": low, "quality_F_high": high, "quality_score": f * utility,
            "quality_score_low": low * utility, "quality_score_high": high * utility, "quality_models": n,
            "quality_ceiling": res["chance_ceiling"], "quality_max_epsilon": res["largest_finite_epsilon"],
            "quality_leaking": float(100.0 * (points == 0).mean()), "quality_time_s": time.perf_counter() - start,
            "quality_leaks": leaks}


def klom_metric(model, outs, inputs) -> dict:
    """KLOM of the method that made `model` on the forget set (mean and 95th percentile over its samples) and on the
    test set (mean), in nats, from the same models as `forgetting_quality`."""
    start = time.perf_counter()
    unlearned, retrained, _ = _phis(outs, inputs)
    forget_klom = klom(unlearned, retrained)
    test_u, test_r, _ = _phis(outs, inputs, test=True)
    return {"KLOM_forget": float(forget_klom.mean()), "KLOM_forget_p95": float(np.percentile(forget_klom, 95)),
            "KLOM_test": float(klom(test_u, test_r).mean()), "klom_time_s": time.perf_counter() - start}


def _phis(outs, inputs, test: bool = False, form: str = "exact") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unlearned, retrained) phi of `form` (see `phi`), each (models, samples), on the forget set (or the whole test
    set), and the labels."""
    from ..workflows.bank import ensemble

    unlearned, retrained = ensemble(outs, inputs)
    part = 1 if test else 0
    rows = slice(None) if test else inputs.splits.forget.numpy()
    labels = (inputs.data.y_test if test else inputs.data.y_train).cpu().numpy()[rows]
    of = lambda side: np.stack([phi(o[part][rows], labels, form) for o in side])
    return of(unlearned), of(retrained), labels


def _utility_ratio(outs, inputs) -> float:
    """(RA / RA of retrain) x (TA / TA of retrain), each accuracy the mean over its side's models: `final_score`
    of an F of 1."""
    from ..workflows.bank import ensemble
    from .evaluate import accuracy

    unlearned, retrained = ensemble(outs, inputs)
    splits = inputs.splits
    y_train, y_test = inputs.data.y_train.cpu().numpy(), inputs.data.y_test.cpu().numpy()
    r, t = splits.retain.numpy(), splits.test_retain.numpy()
    mean = lambda side, part, rows, y: float(np.mean([accuracy(o[part][rows], y[rows]) for o in side]))
    return final_score(1.0, mean(unlearned, 0, r, y_train), mean(retrained, 0, r, y_train),
                       mean(unlearned, 1, t, y_test), mean(retrained, 1, t, y_test))

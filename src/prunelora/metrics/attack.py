"""A per-example membership attack against unlearning, in the spirit of U-LiRA (Hayes et al. 2024).

The attacker's question: was this model retrained without the forget set, or trained on it and then
unlearned? For every forget sample x it models the statistic phi(x) = log(p_y / (1 - p_y)) (the
logit-scaled confidence of LiRA) under "retrained" with a Gaussian fitted over shadow models retrained
from scratch on the retain set (per-example mean, variance pooled over examples, as LiRA does with few
shadows). A model's per-example score is |phi(x) - mean(x)| / std. The attacker then tells apart the
forget samples scored on the unlearned model from the same samples scored on the run's own retrain,
with a threshold chosen on one half of the samples and applied to the other (and the other way round).
Balanced accuracy 50% = indistinguishable from retraining; 100% = every sample gives it away.
"""

from __future__ import annotations

import numpy as np
import torch


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) = z_y - logsumexp(z_{i != y}), computed without forming p (stable)."""
    z = logits.astype(np.float64)
    rows = np.arange(len(labels))
    true = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    top = others.max(axis=1)
    return true - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


def fit_reference(phis: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-example mean, pooled std) of phi over shadow models: `phis` is (shadows, examples)."""
    mean = phis.mean(axis=0)
    pooled = float(np.sqrt(((phis - mean) ** 2).sum() / max(phis.size - phis.shape[1], 1)))
    return mean, max(pooled, 1e-6)


def scores(phi: np.ndarray, mean: np.ndarray, std: float) -> np.ndarray:
    """How far each example's phi lies from the retrained models' distribution, in standard deviations."""
    return np.abs(phi - mean) / std


def threshold_accuracy(positive: np.ndarray, negative: np.ndarray, seed: int) -> float:
    """Balanced accuracy (%) of "score > t means unlearned", with t chosen on one random half of the
    examples (the best t there) and applied to the other half, both ways; `positive[i]` and `negative[i]`
    are the same example scored on the two models."""
    n = len(positive)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    halves = (order[: n // 2], order[n // 2 :])
    correct = total = 0.0
    for fit_idx, test_idx in (halves, halves[::-1]):
        t = _best_threshold(positive[fit_idx], negative[fit_idx])
        correct += (positive[test_idx] > t).sum() + (negative[test_idx] <= t).sum()
        total += 2 * len(test_idx)
    return float(100.0 * correct / total)


def _best_threshold(positive: np.ndarray, negative: np.ndarray) -> float:
    candidates = np.concatenate([[-np.inf], np.sort(np.concatenate([positive, negative]))])
    accuracy = [(positive > t).mean() + (negative <= t).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def membership_accuracy(members: np.ndarray, nonmembers: np.ndarray, seed: int) -> float:
    """Balanced accuracy (%) of the best rule "score above t means member" or "score at most t means member", chosen on
    a random half of each set and applied to the other half, both ways round (the sets need not be paired or of one
    size). 50 = no better than chance."""
    generator = torch.Generator().manual_seed(seed)
    split = lambda v: np.array_split(v[torch.randperm(len(v), generator=generator).numpy()], 2)
    m, n = split(members), split(nonmembers)
    total = 0.0
    for fit, test in ((0, 1), (1, 0)):
        t, above = _best_rule(m[fit], n[fit])
        caught, passed = (m[test] > t, n[test] <= t) if above else (m[test] <= t, n[test] > t)
        total += 0.5 * (caught.mean() + passed.mean())
    return float(100.0 * total / 2)


def _best_rule(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, bool]:
    """(t, above) maximising the balanced accuracy of the rule on these samples."""
    candidates = np.concatenate([[-np.inf], np.sort(np.concatenate([members, nonmembers]))])
    below_m = np.searchsorted(np.sort(members), candidates, side="right") / len(members)  # share <= t
    below_n = np.searchsorted(np.sort(nonmembers), candidates, side="right") / len(nonmembers)
    above_acc, below_acc = (1 - below_m) + below_n, below_m + (1 - below_n)  # twice the balanced accuracy
    i, j = int(np.argmax(above_acc)), int(np.argmax(below_acc))
    return (float(candidates[i]), True) if above_acc[i] >= below_acc[j] else (float(candidates[j]), False)

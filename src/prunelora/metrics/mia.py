"""Membership-inference attacks used as unlearning metrics (MIA-Efficacy).

The attacker learns to tell members (retain samples) from non-members (test samples of the remaining
classes), balanced by subsampling, from a per-sample feature of the model's softmax output; MIA-Efficacy
is the share (%) of forget samples it calls non-members. Retrain scores ~100.

Features (p = softmax probabilities, y = true label; logs use max(x, 1e-30) so p = 0 or 1 stay finite):
- confidence:  p_y                                   (the field's headline: RBF SVC on it)
- entropy:     -sum_i p_i log p_i
- m_entropy:   -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)   (Song & Mittal 2021)
- loss:        -log p_y                              (logistic regression, class-weighted, balanced sets)

`MIA_loss_authors` is the PruneLoRA authors' evaluate.py as it runs: the per-sample cross-entropy of the
logits, scikit-learn's default LogisticRegression (no class weights), on their member and non-member sets
as drawn (9,000 retain samples against 5,000 test samples on CIFAR-10; not balanced). With more members
than non-members its threshold moves toward calling samples members: it tends to read lower than the
balanced one.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

TINY = 1e-30


def safe_log(x: np.ndarray) -> np.ndarray:
    """log(max(x, 1e-30)): finite where a probability is 0."""
    return np.log(np.maximum(x, TINY))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def features(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample attack features from probabilities (N, C) and true labels (N,), in float64."""
    p = probs.astype(np.float64)
    p_y = p[np.arange(len(labels)), labels]
    others = p.copy()
    others[np.arange(len(labels)), labels] = 0.0  # drop the true class from the sum over i != y
    return {
        "confidence": p_y,
        "entropy": -(p * safe_log(p)).sum(axis=1),
        "m_entropy": -(1.0 - p_y) * safe_log(p_y) - (others * safe_log(1.0 - others)).sum(axis=1),
        "loss": -safe_log(p_y),
    }


def attack_efficacy(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray, classifier: str = "svc") -> float:
    """Train member(1)/non-member(0) on 1-D features; return % of `target` predicted non-member."""
    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    if classifier == "svc":
        model = SVC(C=3, gamma="auto", kernel="rbf")  # the setting of the field's reference code
    else:
        model = LogisticRegression(class_weight="balanced")
    model.fit(x, y)
    return float(100.0 * (model.predict(target.reshape(-1, 1)) == 0).mean())


def balanced(member_idx: np.ndarray, nonmember_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger of the two index sets so both have the same size (seeded)."""
    rng = np.random.default_rng(seed)
    n = min(len(member_idx), len(nonmember_idx))
    pick = lambda a: a if len(a) == n else np.sort(rng.choice(a, n, replace=False))
    return pick(member_idx), pick(nonmember_idx)


ATTACKS = {  # reported name -> (feature, classifier), on the balanced member / non-member sets
    "MIA": ("confidence", "svc"),
    "MIA_entropy": ("entropy", "svc"),
    "MIA_m_entropy": ("m_entropy", "svc"),
    "MIA_loss_balanced": ("loss", "logreg"),
}


def mia_efficacy(member: dict, nonmember: dict, target: dict) -> dict[str, float]:
    """Every attack of ATTACKS on precomputed feature dicts (see `features`)."""
    return {
        name: attack_efficacy(member[feat], nonmember[feat], target[feat], clf) for name, (feat, clf) in ATTACKS.items()
    }


# ---------------------------------------------------------------- the PruneLoRA authors' variant

# their evaluate.py shuffles the retain set and keeps positions [5000 k, 5000 k + 1000) for k = 0..8 (9,000 of
# CIFAR-10's 45,000), and the first 5,000 of the shuffled retain-class test samples (of 9,000)
AUTHORS_MEMBER_SLICES = tuple((5000 * k, 5000 * k + 1000) for k in range(9))
AUTHORS_NONMEMBERS = 5000


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of logits (N, C), in nats, float64: logsumexp(z) - z_y (not clamped)."""
    z = logits.astype(np.float64)
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[np.arange(len(labels)), labels]


def authors_subsets(member_idx: np.ndarray, nonmember_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The member and non-member samples the authors' evaluate.py draws (seeded): their slices of the shuffled
    members, the first AUTHORS_NONMEMBERS of the shuffled non-members; smaller sets give what the slices hold."""
    rng = np.random.default_rng(seed)
    members = rng.permutation(member_idx)
    members = np.concatenate([members[a:b] for a, b in AUTHORS_MEMBER_SLICES])
    return np.sort(members), np.sort(rng.permutation(nonmember_idx)[:AUTHORS_NONMEMBERS])


def authors_efficacy(member_loss: np.ndarray, nonmember_loss: np.ndarray, target_loss: np.ndarray) -> float:
    """The authors' attack on per-sample losses: LogisticRegression() with scikit-learn's defaults fitted on
    members (label 0) against non-members (label 1) as given, no class weights; % of `target` predicted 1."""
    x = np.concatenate([member_loss, nonmember_loss]).reshape(-1, 1)
    y = np.concatenate([np.zeros(len(member_loss)), np.ones(len(nonmember_loss))])
    model = LogisticRegression().fit(x, y)
    return float(100.0 * (model.predict(target_loss.reshape(-1, 1)) == 1).mean())

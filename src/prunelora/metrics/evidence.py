"""Evidence that a class is gone, beyond UA/MIA: each is a pure function or a short procedure, compared
with retrain (never saw the class) and the original (knows it).

- probe: can a linear classifier still read the forgotten classes from the penultimate features?
- relearn: how fast does the class come back from a handful of its samples? (on text: `text_relearn.py`)
- divergence: how far are the model's output distributions from retrain's (KL and JS, in nats)?
- attack: can a per-example attack tell this model's forget samples from retrain's?

Each metric is declared (name, summary, whether it needs retrain's outputs) in `catalog.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..config import to_dict
from ..data import ImageData
from ..data.catalog import is_text
from ..engine.context import Context, seed_everything
from ..engine.loop import fit, recipe_from
from ..engine.meter import CostMeter
from ..models import create_model
from ..store import cache
from .attack import fit_reference, logit_confidence, scores, threshold_accuracy
from .evaluate import forward_rows, predict
from .mia import safe_log, softmax


def penultimate(model: nn.Module, data: ImageData, x: torch.Tensor, ctx: Context, batch_size: int = 512) -> np.ndarray:
    """The classifier's input for every image of `x` (N, D), as float32 numpy, in eval mode."""
    return forward_rows(model, data, x, ctx, batch_size, head_input=True)[1]


def balanced_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean of the per-class recalls, in % (50 = chance for two classes)."""
    return float(100.0 * np.mean([(pred[target == c] == c).mean() for c in np.unique(target)]))


def probe_accuracy(features: np.ndarray, is_target: np.ndarray, seed: int, folds: int = 5) -> float:
    """Balanced accuracy (%) of a logistic-regression probe telling `is_target` samples from the rest,
    out of fold (stratified `folds`-fold cross-validation on standardised features); NaN when either side
    has fewer than two samples."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    folds = min(folds, int(is_target.sum()), int((~is_target).sum()))
    if folds < 2:  # too few samples on one side to cross-validate
        return float("nan")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(probe, features, is_target.astype(int), cv=cv)
    return balanced_accuracy(pred, is_target.astype(int))


def kl_js(logits: np.ndarray, reference_logits: np.ndarray) -> tuple[float, float]:
    """Mean over samples of KL(reference || model) and of the Jensen-Shannon divergence, in nats
    (JS is symmetric and at most ln 2)."""
    p, q = softmax(reference_logits.astype(np.float64)), softmax(logits.astype(np.float64))
    m = 0.5 * (p + q)
    kl = (p * (safe_log(p) - safe_log(q))).sum(1)
    js = 0.5 * (p * (safe_log(p) - safe_log(m))).sum(1) + 0.5 * (q * (safe_log(q) - safe_log(m))).sum(1)
    return float(kl.mean()), float(js.mean())


def relearn_rows(forget: torch.Tensor, retain: torch.Tensor, samples: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the rows the relearning attack trains on: `samples` forget rows then 4x as many retain rows, drawn with
    `seed`; the forget rows left out, in forget order: what the text version scores)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(forget), generator=generator)
    few = forget[order[:samples]]
    some = retain[torch.randperm(len(retain), generator=generator)[: 4 * len(few)]]
    return torch.cat([few, some]), forget[order[samples:].sort().values]


def relearn(
    model: nn.Module, data: ImageData, forget: torch.Tensor, retain: torch.Tensor, test_forget: torch.Tensor,
    ctx: Context, samples: int, steps: int, lr: float = 1e-3,
) -> float:
    """Accuracy (%) on the forgotten classes' test samples after `steps` full-batch Adam steps on a copy of
    `model`, trained on `samples` forget samples mixed with 4x as many retain samples (all weights train,
    BatchNorm in eval mode so that the tiny batch does not rewrite its statistics)."""
    rows = relearn_rows(forget, retain, samples, ctx.seed)[0].to(data.x_train.device)
    x = ctx.model_input(data, data.x_train[rows])
    y = data.y_train[rows].to(ctx.device)
    student = copy.deepcopy(model).eval()
    with torch.enable_grad():
        for p in student.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(student(x).float(), y).backward()
            optimizer.step()
    student.eval()
    with torch.inference_mode():
        rows = test_forget.to(data.x_test.device)
        logits = student(ctx.model_input(data, data.x_test[rows])).float()
        return float(100.0 * (logits.argmax(1).cpu() == data.y_test[rows].cpu()).float().mean())


# ---------------------------------------------------------------- registered evidence metrics


@dataclass
class EvidenceInput:
    """What an evidence metric may look at besides the model: data, splits, context and settings."""

    data: ImageData
    splits: object  # Splits
    ctx: Context
    config: object  # EvalConfig
    experiment: object = None  # the whole ExperimentConfig (for metrics that train shadow models)
    method: str | None = None  # the method (or variant) that made the model; "original" for the original


def probe_metric(model, outputs, inputs: EvidenceInput) -> dict:
    data, splits = inputs.data, inputs.splits
    if not splits.forget_classes:  # sample-wise requests: no class to look for
        return {"probe": float("nan")}
    features = getattr(outputs, "test_features", None)  # captured in the pass that made the test logits
    if features is None:
        features = penultimate(model, data, data.x_test, inputs.ctx, inputs.config.batch_size)
    is_target = np.isin(data.y_test.cpu().numpy(), splits.forget_classes)
    return {"probe": probe_accuracy(features, is_target, inputs.ctx.seed)}


def relearn_metric(model, outputs, inputs: EvidenceInput) -> dict:
    if is_text(inputs.data):  # the text version (text_relearn.py): held-out forget questions' ROUGE-L
        from .text_relearn import text_relearn_metric

        return text_relearn_metric(model, outputs, inputs)
    cfg, splits = inputs.config, inputs.splits
    if len(splits.test_forget) == 0:
        return {"relearn_TA": float("nan")}
    acc = relearn(model, inputs.data, splits.forget, splits.retain, splits.test_forget, inputs.ctx,
                  cfg.relearn_samples, cfg.relearn_steps, cfg.relearn_lr)
    return {"relearn_TA": acc}


def divergence_metric(outputs, reference, inputs: EvidenceInput) -> dict:
    forget = inputs.splits.forget.numpy()
    kl_f, js_f = kl_js(outputs[0][forget], reference[0][forget])
    kl_t, js_t = kl_js(outputs[1], reference[1])
    return {"KL_forget": kl_f, "JS_forget": js_f, "KL_test": kl_t, "JS_test": js_t}


# shadow models' phi on the forget set, per (data, model, recipe, request, shadow count): computed once per
# process and reused across seeds and methods (they depend on neither); the models also go to the model cache
_SHADOWS: dict[str, np.ndarray] = {}


def shadow_phis(inputs: EvidenceInput) -> np.ndarray:
    """(shadows, forget samples) logit-scaled confidences of models retrained from scratch on the retain set
    with the original's recipe and seeds 1_000_000 + k (never an experiment's seed)."""
    cfg = inputs.experiment
    described = json.dumps([to_dict(cfg.data), to_dict(cfg.model), to_dict(cfg.train), inputs.splits.forget.tolist(),
                            inputs.config.attack_shadows], sort_keys=True)
    memo = f"{zlib.crc32(described.encode()):08x}-{len(described)}"
    if memo not in _SHADOWS:
        phis = np.stack([_shadow_phi(inputs, k) for k in range(inputs.config.attack_shadows)])
        _SHADOWS.clear()  # keep one request's shadows: they are all a run needs
        _SHADOWS[memo] = phis
    return _SHADOWS[memo]


def _shadow_phi(inputs: EvidenceInput, k: int) -> np.ndarray:
    """Shadow k's phi on the forget set."""
    data, forget = inputs.data, inputs.splits.forget
    logits = predict(shadow_model(inputs, k), data, data.x_train[forget.to(data.x_train.device)], inputs.ctx)
    return logit_confidence(logits, data.y_train[forget].cpu().numpy())


def shadow_model(inputs: EvidenceInput, k: int) -> nn.Module:
    """Shadow k: a retrain with seed 1_000_000 + k, kept in the model cache like one (the attack's shadows and the
    retrained side of the forgetting-quality scores are the same models)."""
    cfg, data, splits = inputs.experiment, inputs.data, inputs.splits
    seed = 1_000_000 + k
    seed_everything(seed)
    ctx = dataclasses.replace(inputs.ctx, seed=seed, meter=CostMeter(inputs.ctx.device))
    model = ctx.prepare_model(create_model(cfg.model, data.num_classes, data.in_chans, data.image_size))
    key, described = cache.model_key("shadow", cfg, seed, data.source_rows(splits.retain), ctx, data)
    if not (cfg.cache and cache.load("shadow", key, model) is not None):
        fit(model, data, splits.retain, recipe_from(cfg.train), ctx, desc=f"shadow retrain {k + 1}")
        if cfg.cache:
            cache.store("shadow", key, described, model, {})
    return model.eval()


def attack_metric(outputs, reference, inputs: EvidenceInput) -> dict:
    forget = inputs.splits.forget.numpy()
    y = inputs.data.y_train.cpu().numpy()[forget]
    mean, std = fit_reference(shadow_phis(inputs))
    positive = scores(logit_confidence(outputs[0][forget], y), mean, std)
    negative = scores(logit_confidence(reference[0][forget], y), mean, std)
    return {"attack": threshold_accuracy(positive, negative, inputs.ctx.seed)}

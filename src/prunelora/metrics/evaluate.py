"""All per-model metrics from one forward pass over the train and test sets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import ImageData, Splits
from ..engine import dist
from ..engine.context import Context
from ..models.layers import classifier_name
from . import mia
from .catalog import keys


@torch.inference_mode()
def forward_rows(model: nn.Module, data: ImageData, x: torch.Tensor, ctx: Context, batch_size: int = 512,
                 head_input: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits (N, C), the classifier's inputs (N, D) from the same pass when `head_input`, else None), in eval mode,
    as float32 numpy. With several processes each computes every size-th image and the rows are gathered: every
    rank returns all N rows."""
    model.eval()
    mine = x[dist.shard(torch.arange(len(x)).to(x.device))]
    out, captured = [], []
    hook = None
    if head_input:
        head = dict(model.named_modules())[classifier_name(model)]
        hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].flatten(1).float()))
    try:
        with ctx.autocast():
            for i in range(0, len(mine), batch_size):
                out.append(model(ctx.model_input(data, mine[i : i + batch_size])).float())
    finally:
        if hook is not None:
            hook.remove()
    rows = lambda parts: dist.gather_rows(torch.cat(parts), len(x)).cpu().numpy()
    return rows(out), rows(captured) if head_input else None


def predict(model: nn.Module, data: ImageData, x: torch.Tensor, ctx: Context, batch_size: int = 512) -> np.ndarray:
    """Logits (N, C) in eval mode, as float32 numpy (see `forward_rows`)."""
    return forward_rows(model, data, x, ctx, batch_size)[0]


class Outputs(tuple):
    """A model's (train logits, test logits), which every metric reads, with `test_features`: the test images'
    classifier inputs (N, D) from the same forward pass, which the linear probe reads instead of a pass of its own."""

    test_features: np.ndarray | None

    def __new__(cls, train_logits: np.ndarray, test_logits: np.ndarray, test_features: np.ndarray | None = None):
        self = super().__new__(cls, (train_logits, test_logits))
        self.test_features = test_features
        return self

    def __getnewargs__(self):  # copy and pickle rebuild it through __new__, features included
        return (*self, self.test_features)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in %, or NaN for an empty set."""
    return float(100.0 * (logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


def outputs(model: nn.Module, data: ImageData, ctx: Context, batch_size: int = 512) -> Outputs:
    """(train logits, test logits) with the test images' classifier inputs (where the model names its classifier);
    non-finite outputs (a diverged model) are a FloatingPointError."""
    train_logits = predict(model, data, data.x_train, ctx, batch_size)
    has_head = classifier_name(model) in dict(model.named_modules())
    test_logits, test_features = forward_rows(model, data, data.x_test, ctx, batch_size, head_input=has_head)
    if not (np.isfinite(train_logits).all() and np.isfinite(test_logits).all()):
        raise FloatingPointError("the model's outputs are not finite (its training diverged); lower the learning rate")
    return Outputs(train_logits, test_logits, test_features)


def evaluate(model: nn.Module, data: ImageData, splits: Splits, ctx: Context, batch_size: int = 512) -> dict[str, float]:
    """UA, RA, TA, forget-class test accuracy, and the MIA-Efficacy variants (all in %)."""
    return quality(*outputs(model, data, ctx, batch_size), data, splits, ctx.seed)


def quality(train_logits: np.ndarray, test_logits: np.ndarray, data: ImageData, splits: Splits, seed: int) -> dict[str, float]:
    """The metrics of `evaluate` from a model's outputs."""
    y_train, y_test = data.y_train.cpu().numpy(), data.y_test.cpu().numpy()
    f, r = splits.forget.numpy(), splits.retain.numpy()
    tr, tf = splits.test_retain.numpy(), splits.test_forget.numpy()
    metrics = {
        "UA": 100.0 - accuracy(train_logits[f], y_train[f]),
        "RA": accuracy(train_logits[r], y_train[r]),
        "TA": accuracy(test_logits[tr], y_test[tr]),
        "forget_TA": accuracy(test_logits[tf], y_test[tf]),
    }
    member, nonmember = mia.balanced(r, tr, seed)
    train_feats = mia.features(mia.softmax(train_logits), y_train)
    test_feats = mia.features(mia.softmax(test_logits), y_test)
    pick = lambda feats, idx: {k: v[idx] for k, v in feats.items()}
    metrics.update(mia.mia_efficacy(pick(train_feats, member), pick(test_feats, nonmember), pick(train_feats, f)))
    # the authors' variant: their own (unbalanced) member / non-member draw and the loss of the raw logits
    member, nonmember = mia.authors_subsets(r, tr, seed)
    train_loss, test_loss = mia.cross_entropy(train_logits, y_train), mia.cross_entropy(test_logits, y_test)
    metrics["MIA_loss_authors"] = mia.authors_efficacy(train_loss[member], test_loss[nonmember], train_loss[f])
    return metrics


def avg_gap(metrics: dict, reference: dict) -> float:
    """Mean absolute difference to the reference (retrain) over the image metrics declared with gap (UA, MIA, RA,
    TA), in points."""
    return float(np.mean([abs(metrics[k] - reference[k]) for k in keys("image", gap=True)]))

"""Random Labels (RL; Golatkar et al. 2020, as run in Jia et al. 2023): fine-tune on the forget samples,
relabelled with uniformly random wrong classes, together with the retain set.

Labels are drawn anew for every batch by default, as in the reference code (`torch.randint` on each forget batch),
so a sample seen in two epochs gets two independent draws; `hparams.random_labels.redraw=once` draws each forget
sample's label once for the whole run (what this project did before 2026-12-01).

Reference defaults (CIFAR-10 ResNet-18): SGD, lr 0.01, 10 epochs, labels drawn from all classes (a tenth
keep their true label). Ours: the `unlearn` recipe (Adam, lr 1e-3, 5 epochs), as for the paper's own
methods, and always a wrong label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.loop import fit
from .losses import random_wrong_labels
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def relabel_forget(task: UnlearnTask, seed: int) -> torch.Tensor:
    """Train labels with every forget sample's label replaced by a random wrong one (fixed per seed: redraw=once)."""
    labels = task.data.y_train.clone()
    forget = task.splits.forget.to(labels.device)
    generator = torch.Generator().manual_seed(seed)
    labels[forget] = random_wrong_labels(labels[forget], task.data.num_classes, generator)
    return labels


class RandomRelabel:
    """A batch's labels with each forget sample's replaced by a random wrong class, drawn anew at every call."""

    def __init__(self, forget_mask: torch.Tensor, num_classes: int, seed: int):
        self.forget, self.num_classes = forget_mask, num_classes  # forget_mask: over the train set, on the device
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        is_forget = self.forget[rows]
        y = y.clone()
        y[is_forget] = random_wrong_labels(y[is_forget], self.num_classes, self.generator)
        return y


def train_random_labels(model, task: UnlearnTask, ctx, desc: str) -> list[dict]:
    """Fit on forget (random wrong labels) + retain with the method's recipe; returns the history."""
    index = torch.cat([task.splits.forget, task.splits.retain])
    recipe = task.unlearn_recipe()
    if task.hparams.redraw == "once":
        return fit(model, task.data, index, recipe, ctx, desc=desc, labels=relabel_forget(task, ctx.seed),
                   bn_index=task.splits.retain)
    # its own stream (not the batch order's), so that the draws do not change which batches the run sees
    relabel = RandomRelabel(task.forget_mask(ctx.device), task.data.num_classes, ctx.seed * 7919 + 17)
    smoothing = recipe.label_smoothing

    def objective(logits, b):
        return F.cross_entropy(logits, relabel(b.y, b.rows), label_smoothing=smoothing)

    return fit(model, task.data, index, recipe, ctx, desc=desc, objective=objective, bn_index=task.splits.retain)


def random_labels(model, task: UnlearnTask, ctx) -> Unlearned:
    unfreeze(model)
    history = train_random_labels(model, task, ctx, "random_labels")
    info = {"trainable_params": trainable_parameters(model), "history": history}
    return Unlearned(model, task.unlearn_recipe().epochs, info)

"""Random Labels (RL; Golatkar et al. 2020, as run in Jia et al. 2023): fine-tune on the forget samples,
each relabelled once with a uniformly random wrong class, together with the retain set.

Reference defaults (CIFAR-10 ResNet-18): SGD, lr 0.01, 10 epochs, labels drawn from all classes (a tenth
keep their true label). Ours: the `unlearn` recipe (Adam, lr 1e-3, 5 epochs), as for the paper's own
methods, and always a wrong label.
"""

from __future__ import annotations

import torch

from ..engine import fit
from .losses import random_wrong_labels
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def relabel_forget(task: UnlearnTask, seed: int) -> torch.Tensor:
    """Train labels with every forget sample's label replaced by a random wrong one (fixed per seed)."""
    labels = task.data.y_train.clone()
    forget = task.splits.forget.to(labels.device)
    generator = torch.Generator().manual_seed(seed)
    labels[forget] = random_wrong_labels(labels[forget], task.data.num_classes, generator)
    return labels


def train_random_labels(model, task: UnlearnTask, ctx, desc: str) -> list[dict]:
    """Fit on forget (random wrong labels) + retain with the method's recipe; returns the history."""
    index = torch.cat([task.splits.forget, task.splits.retain])
    return fit(model, task.data, index, task.unlearn_recipe(), ctx, desc=desc,
               labels=relabel_forget(task, ctx.seed), bn_index=task.splits.retain)


def random_labels(model, task: UnlearnTask, ctx) -> Unlearned:
    unfreeze(model)
    history = train_random_labels(model, task, ctx, "random_labels")
    info = {"trainable_params": trainable_parameters(model), "history": history}
    return Unlearned(model, task.unlearn_recipe().epochs, info)

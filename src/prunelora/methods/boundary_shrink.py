"""Boundary Shrink (Chen et al. CVPR 2023, "Boundary Unlearning"): find for every forget sample its nearest
other class by a one-step FGSM attack (L-inf bound `bound` in [0, 1] pixel units) on the frozen original,
then fine-tune on the forget samples alone, labelled with the class the attacked input falls into.
Where the attack fails the label stays the true one, as in the reference code.

Reference defaults: FGSM bound 0.1, SGD (momentum 0.9), lr 1e-5, 10 epochs, forget set only, batch 64.
Ours: lr 1e-3, `unlearn.epochs`, BatchNorm frozen. On the default (two forget batches per epoch), lr 1e-5,
1e-4, 1e-3, 2e-3, 3e-3 and 1e-2 gave UA 0, 16, 84, 44, 36 and 0 (the last with RA 0): it is unstable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.loop import batches, fit
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def nearest_other_class(model, data, index: torch.Tensor, ctx, bound: float, batch_size: int = 256) -> torch.Tensor:
    """The class a frozen `model` predicts for each sample of `index` after one FGSM step of size `bound`
    (pixel units), clamped to valid pixels. Returns labels on the device, aligned with `index`."""
    mean = torch.tensor(data.mean, device=ctx.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=ctx.device).view(1, -1, 1, 1)
    out = []
    for idx in batches(len(index), batch_size, None):
        rows = index[idx].to(data.x_train.device)
        pixels = (data.x_train[rows].to(ctx.device).float() / 255.0).requires_grad_(True)
        y = data.y_train[rows].to(ctx.device)
        loss = F.cross_entropy(model(ctx.prepare_input((pixels - mean) / std)).float(), y)
        (grad,) = torch.autograd.grad(loss, pixels)
        adversarial = (pixels + bound * grad.sign()).clamp(0.0, 1.0).detach()
        with torch.no_grad():
            out.append(model(ctx.prepare_input((adversarial - mean) / std)).argmax(1))
    return torch.cat(out)


def boundary_shrink(model, task: UnlearnTask, ctx) -> Unlearned:
    frozen = task.original_like(model)
    forget = task.splits.forget
    new_labels = nearest_other_class(frozen, task.data, forget, ctx, task.hparams.bound)
    labels = task.data.y_train.clone().to(ctx.device)
    labels[forget.to(ctx.device)] = new_labels
    unfreeze(model)
    recipe = task.unlearn_recipe()
    history = fit(model, task.data, forget, recipe, ctx, desc="boundary_shrink", labels=labels, bn_index=task.splits.retain)
    moved = float((new_labels != task.data.y_train[forget].to(ctx.device)).float().mean())
    info = {"trainable_params": trainable_parameters(model), "relabelled_share": moved, "history": history}
    return Unlearned(model, recipe.epochs, info)

"""Gradient Ascent (GA; Thudi et al. 2022, as run in Jia et al. 2023 "Model Sparsity Can Simplify Machine
Unlearning"): ascend the cross-entropy on the forget set only; the retain set is never seen.

Reference defaults (CIFAR-10 ResNet-18, 4500 forget samples): SGD, lr 1e-4, 5 epochs. Ours: SGD (momentum
0.9), lr 1e-2, `unlearn.epochs`, BatchNorm frozen. The digits forget set is two batches per epoch, so at lr 1e-4
nothing moves; on the default, lr 1e-4, 1e-3, 3e-3 and 1e-2 gave UA 0, 0, 0 and 13.7, and 2e-2 diverged. Run at one
thread, lr 1e-2 diverged at seeds 0 to 2; `prunelora tune` (15 trials over lr, epochs and batch size) found lr 4.4e-3
for one epoch (7 steps), UA 95 ± 9 and RA 85 ± 5 over those seeds (docs/results.md, "Tuned against default recipes").
"""

from __future__ import annotations

import torch.nn.functional as F

from ..engine.loop import fit
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def grad_ascent(model, task: UnlearnTask, ctx) -> Unlearned:
    unfreeze(model)
    recipe = task.unlearn_recipe()
    history = fit(model, task.data, task.splits.forget, recipe, ctx, desc="grad_ascent",
                  objective=lambda logits, b: -F.cross_entropy(logits, b.y), bn_index=task.splits.retain)
    return Unlearned(model, recipe.epochs, {"trainable_params": trainable_parameters(model), "history": history})

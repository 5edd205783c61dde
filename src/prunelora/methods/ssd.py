"""Selective Synaptic Dampening (SSD; Foster et al. AAAI 2024, "Fast Machine Unlearning Without Retraining
Through Selective Synaptic Dampening"): no training. Estimate each weight's importance as the diagonal
Fisher information (mean squared gradient of the cross-entropy) on the whole train set D and on the
forget set D_f; where forget importance exceeds alpha x D's, scale the weight by min(lambda * I_D / I_f, 1).

Reference defaults (CIFAR class forgetting, ResNet-18): alpha (selection weighting) 10, lambda (dampening
constant) 1, importance over batches of 64; every parameter, BatchNorm's included. Ours: alpha 30, batches
of `unlearn.batch_size`. On the default, alpha 10, 20, 30 and 50 gave UA 100, 100, 100, 33 with RA 82.9,
96.9, 99.2, 99.9 (lambda 0.1 changed little). That alpha was chosen on seed 0; it is erratic across originals: RA
99.2, 10.8 and 74.5 at seeds 0 to 2 in one run, no change at all at seeds 0 to 2 at one thread, and the alpha 2.9
`prunelora tune` found over two validation seeds forgets everything with RA 21 to 72 (docs/results.md).
"""

from __future__ import annotations

import torch

from .importance import dampen, grad_statistics
from .protocol import Unlearned, UnlearnTask, unfreeze


def ssd(model, task: UnlearnTask, ctx) -> Unlearned:
    hp, batch_size = task.hparams, task.unlearn_recipe().batch_size
    unfreeze(model)
    everything = torch.arange(len(task.data.y_train))
    importance = grad_statistics(model, task.data, everything, ctx, batch_size, power=2)
    forget_importance = grad_statistics(model, task.data, task.splits.forget, ctx, batch_size, power=2)
    params = {n: p for n, p in model.named_parameters() if n in importance}
    changed = dampen(params, importance, forget_importance, hp.alpha, hp.lam)
    total = sum(p.numel() for p in params.values())
    return Unlearned(model.eval(), 0, {"dampened_weights": changed, "dampened_share": changed / total})

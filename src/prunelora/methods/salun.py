"""SalUn (Fan et al. ICLR 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency").

1. Saliency: the gradient of the cross-entropy on the forget set, summed over its batches, in absolute
   value, for every parameter; the `share` of weights with the largest saliency (one threshold across
   the whole model) form the mask.
2. Random Labels restricted to the mask: forget samples relabelled at random plus the retain set, with
   the gradient of every weight outside the mask zeroed (those weights keep the original's values). The wrong
   labels are drawn anew for every batch, as in the reference (`hparams.salun.redraw=once`: once per run).

Reference defaults (CIFAR-10 ResNet-18): mask share 0.5, SGD, lr about 0.013, 10 epochs. Ours: share 0.5
with the `unlearn` recipe (Adam, lr 1e-3, 5 epochs); under Adam without weight decay a weight whose
gradient is always zero stays exactly the original's.
"""

from __future__ import annotations

from .importance import grad_statistics, saliency_mask
from .protocol import Unlearned, UnlearnTask, unfreeze
from .random_labels import train_random_labels


def salun(model, task: UnlearnTask, ctx) -> Unlearned:
    unfreeze(model)
    recipe = task.unlearn_recipe()
    scores = grad_statistics(model, task.data, task.splits.forget, ctx, recipe.batch_size, power=1)
    masks = saliency_mask(scores, task.hparams.share)
    params = dict(model.named_parameters())
    hooks = [params[name].register_hook(lambda g, m=mask: g * m) for name, mask in masks.items()]
    try:
        history = train_random_labels(model, task, ctx, "salun")
    finally:
        for hook in hooks:
            hook.remove()
    salient = sum(int(m.sum()) for m in masks.values())
    info = {"trainable_params": salient, "salient_share": salient / sum(m.numel() for m in masks.values()), "history": history}
    return Unlearned(model, recipe.epochs, info)

"""l1-sparse (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning"): fine-tune on the retain set
with an L1 penalty on all weights whose weight decays linearly over the epochs:
loss = CE + alpha * (1 - epoch / epochs) * sum |w|.

Reference defaults (CIFAR-10 ResNet-18): SGD, lr 0.01, 10 epochs, alpha tuned per setting (the paper does
not publish it). Ours: alpha 1e-4 with the `unlearn` recipe; on the default alpha 5e-4 and 1e-4 both gave
UA 100, with RA 98.5 and 99.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..engine import fit
from ..errors import UserError
from .losses import l1_norm, linear_decay
from .protocol import RecipeConfig, Unlearned, UnlearnTask, register_method, trainable_parameters, unfreeze


@dataclass
class L1SparseConfig(RecipeConfig):
    alpha: float = 1e-4  # initial weight of the L1 penalty (per unit of summed |w|)

    def __post_init__(self):
        if self.alpha < 0:
            raise UserError("hparams.l1_sparse.alpha must be >= 0")


@register_method("l1_sparse", "fine-tune on retain with a decaying L1 penalty (l1-sparse)", config=L1SparseConfig)
def l1_sparse(model, task: UnlearnTask, ctx) -> Unlearned:
    params = list(unfreeze(model).parameters())
    recipe = task.unlearn_recipe()
    alpha = task.hparams.alpha

    def objective(logits, b):
        return F.cross_entropy(logits, b.y) + linear_decay(alpha, b.epoch, recipe.epochs) * l1_norm(params)

    history = fit(model, task.data, task.splits.retain, recipe, ctx, desc="l1_sparse", objective=objective)
    return Unlearned(model, recipe.epochs, {"trainable_params": trainable_parameters(model), "history": history})

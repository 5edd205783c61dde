"""Prune + Fine-tune: the paper's L2 structured pruning, then every weight fine-tuned on the retain set.

The pruning is made permanent before training (as the paper does), so nothing keeps pruned rows at
zero: gradient updates revive them, and the report says how many stayed zero.
"""

from __future__ import annotations

from .finetune import finetune_all
from .protocol import Unlearned, UnlearnTask


def prune_finetune(model, task: UnlearnTask, ctx) -> Unlearned:
    return finetune_all(model, task, ctx, prune=True)

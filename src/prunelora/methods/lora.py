"""LoRA only: PruneLoRA without the pruning step (adapters + head trained on the retain set, then merged)."""

from __future__ import annotations

from .protocol import Unlearned, UnlearnTask, register_method
from .prunelora import adapt


@register_method("lora", "LoRA adapters + head on the retain set, no pruning", ("unlearn", "lora"))
def lora(model, task: UnlearnTask, ctx) -> Unlearned:
    return adapt(model, task, ctx, prune=False)

"""LoRA only: PruneLoRA without the pruning step (adapters + head trained on the retain set, then merged)."""

from __future__ import annotations

from .protocol import Unlearned, UnlearnTask
from .prunelora import adapt


def lora(model, task: UnlearnTask, ctx) -> Unlearned:
    return adapt(model, task, ctx, prune=False)

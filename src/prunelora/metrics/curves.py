"""Learning curves (`eval.curves=true`): accuracy on the forget set (100 - UA) and on the retain set (RA) after
every unlearning epoch, measured as the final table is, so that the last point is the table's value."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from ..data import ImageData, Splits
from ..engine.context import Context
from ..engine.loop import recalibrate_bn
from .evaluate import accuracy, predict


def learning_curve(data: ImageData, splits: Splits, bn: str, ctx: Context, batch_size: int) -> Callable[[nn.Module], dict]:
    """A monitor for `fit`: forget and retain accuracy (%) after each epoch, measured on a copy of the model with
    LoRA merged and, under bn=recalibrate, BatchNorm statistics recomputed over the retain set, from logits of the
    whole train set at the evaluation batch size. It draws no random numbers, so the method's results do not
    change; its time is left out of the method's (the engine pauses the meter)."""
    labels = data.y_train.cpu().numpy()
    forget, retain = splits.forget.numpy(), splits.retain.numpy()

    def monitor(model: nn.Module) -> dict:
        final = copy.deepcopy(model)
        if bn == "recalibrate":
            recalibrate_bn(final, data, splits.retain, ctx)
        if hasattr(final, "merge_and_unload"):  # a peft model: merged after training, as the method does
            final = final.merge_and_unload()
        logits = predict(final, data, data.x_train, ctx, batch_size)
        return {"forget_acc": accuracy(logits[forget], labels[forget]), "retain_acc": accuracy(logits[retain], labels[retain])}

    return monitor

"""A forget term beside the retain loss, for the methods that train on both (PruneLoRA's and LoRA's variants, and
the language-model baselines to come): gradient difference or NPO (`losses.py` has the formulas), on images
(per-sample cross-entropy) and on text (per-answer NLL over its answer tokens).

Each step pairs a retain batch with forget rows in proportion to the two sets (at least one), so that an epoch
passes over each about once: the method's frame (a few epochs on the retain set) is kept, and the forget term
does not see the forget set twenty times an epoch, as pairing whole batches would on 5% of the authors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.catalog import is_text
from ..engine.context import Context
from ..engine.loop import AnswerLogits, Batch, answer_targets, sequence_nll
from .losses import gradient_difference, npo
from .protocol import UnlearnTask


def row_nll(logits: torch.Tensor, batch: Batch, text: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL per row (B,) in nats, tokens per row (B,)): a text row's answer tokens (`AnswerLogits`' order),
    or an image's cross-entropy (one 'token')."""
    if not text:
        return F.cross_entropy(logits, batch.y, reduction="none"), torch.ones(len(batch.y), device=logits.device)
    sums = sequence_nll(logits, batch.y, reduction="sum")
    return sums, torch.bincount(answer_targets(batch.y)[1], minlength=len(batch.y)).to(sums.dtype)


def forget_batch(task: UnlearnTask, batch_size: int) -> int:
    """Forget rows beside each retain batch: the forget set's share of the retain set, rounded up."""
    return max(1, math.ceil(batch_size * len(task.splits.forget) / max(len(task.splits.retain), 1)))


@torch.no_grad()
def reference_nll(model: nn.Module, task: UnlearnTask, ctx: Context, batch_size: int = 64) -> torch.Tensor:
    """Each forget row's summed NLL under `model` (the model before unlearning: NPO's reference), over the train
    set's rows (NaN elsewhere), on the device."""
    data, text = task.data, is_text(task.data)
    out = torch.full((len(data.y_train),), float("nan"), device=ctx.device)
    model.eval()
    forward = AnswerLogits(model) if text else model
    for chunk in task.splits.forget.split(batch_size):
        rows = chunk.to(data.x_train.device)
        if text:
            ids, labels = (t.to(ctx.device) for t in data.batch(rows))
            logits, batch = forward(ids, labels[:, 1:] != -100), Batch(ids, labels, rows, 0)
        else:
            x = ctx.model_input(data, data.x_train[rows])
            logits, batch = forward(x), Batch(x, data.y_train[rows].to(ctx.device), rows, 0)
        out[chunk.to(ctx.device)] = row_nll(logits.float(), batch, text)[0]
    return out


def forget_objective(task: UnlearnTask, reference: torch.Tensor | None, device: torch.device):
    """The fit objective of `hparams.<method>.forget_loss` on a batch of retain rows then forget rows: the retain
    rows' token-mean NLL weighted by alpha, and gamma x the forget term (graddiff: minus the forget rows'
    token-mean NLL; npo: NPO of their summed NLL against `reference`)."""
    hp, text = task.hparams, is_text(task.data)
    forget = task.forget_mask(device)

    def objective(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        sums, counts = row_nll(logits, batch, text)
        is_forget = forget[batch.rows]
        retain = sums[~is_forget].sum() / counts[~is_forget].sum().clamp(min=1)
        if hp.forget_loss == "graddiff":
            forgotten = sums[is_forget].sum() / counts[is_forget].sum().clamp(min=1)
            return gradient_difference(retain, forgotten, hp.alpha, hp.gamma)
        return hp.alpha * retain + hp.gamma * npo(sums[is_forget], reference[batch.rows[is_forget]], hp.beta)

    return objective

"""Per-weight importance: squared-gradient (diagonal Fisher) estimates, saliency masks and SSD's dampening.

Pure functions of tensors except `grad_statistics`, which runs the model over samples. Shared by
SalUn (saliency mask from the forget loss's gradient) and SSD (Fisher diagonals on forget vs train data).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData
from ..engine.context import Context
from ..engine.loop import batches


def grad_statistics(
    model: nn.Module, data: ImageData, index: torch.Tensor, ctx: Context, batch_size: int, power: int
) -> dict[str, torch.Tensor]:
    """Per parameter, the mean over batches of |gradient of the batch's mean cross-entropy| ** `power`.

    power=1 (summed signed gradients, then abs) is SalUn's saliency; power=2 is the diagonal Fisher
    estimate SSD uses. The model runs in eval mode (BatchNorm statistics untouched) and is left unchanged.
    """
    was_training = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    groups = batches(len(index), batch_size, None)
    for idx in groups:
        rows = index[idx].to(data.x_train.device)
        x = ctx.model_input(data, data.x_train[rows])
        with ctx.meter.step():
            loss = F.cross_entropy(model(x).float(), data.y_train[rows].to(ctx.device))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        if idx is groups[0]:  # sizes are the same every batch
            ctx.meter.observe([*params.values(), *model.buffers(), *grads, *total.values()])
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                total[name] += g if power == 1 else g.pow(power)
    model.train(was_training)
    return {n: (t.abs() if power == 1 else t) / len(groups) for n, t in total.items()}


def saliency_mask(scores: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """Boolean masks that select exactly round(share * N) of all N weights, those with the largest scores
    (one threshold across every parameter, ties broken by position)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = round(share * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = chosen[start:start + s.numel()].view_as(s)
        start += s.numel()
    return masks


@torch.no_grad()
def dampen(
    params: dict[str, torch.Tensor], importance: dict[str, torch.Tensor], forget_importance: dict[str, torch.Tensor],
    alpha: float, lam: float,
) -> int:
    """Selective Synaptic Dampening, in place: where forget importance exceeds `alpha` x the data's importance,
    scale the weight by min(lam * importance / forget_importance, 1). Returns how many weights it changed."""
    changed = 0
    for name, p in params.items():
        imp, f_imp = importance[name], forget_importance[name]
        selected = f_imp > alpha * imp
        factor = torch.where(selected, (lam * imp / f_imp.clamp_min(1e-30)).clamp(max=1.0), torch.ones_like(imp))
        changed += int((selected & (factor < 1)).sum())
        p.mul_(factor)
    return changed

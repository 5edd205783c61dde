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


# ---------------------------------------------------------------- forget-aware row importance (pruning.importance)


@torch.no_grad()
def mean_abs_outputs(model: nn.Module, names: list[str], passes) -> dict[str, torch.Tensor]:
    """Per named layer, the mean |output| of each output row / channel over `passes`, pairs (run, keep): `run()`
    runs the model on one batch, `keep` (B, L) marks the positions that count (text: the real tokens) or is None
    (every position: a Conv2d's spatial positions, a Linear's rows)."""
    modules = dict(model.named_modules())
    sums = dict.fromkeys(names, 0.0)
    counts = dict.fromkeys(names, 0)
    current = {}

    def hook(name):
        def record(module, inputs, output):
            out = output.detach().float().abs()
            out = out.movedim(1, -1) if out.dim() == 4 else out  # Conv2d: (B, C, H, W) -> channels last
            if current["keep"] is not None and out.dim() == 3:
                out = out[current["keep"]]
            flat = out.reshape(-1, out.shape[-1])
            sums[name] = sums[name] + flat.sum(0).cpu()
            counts[name] += len(flat)
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        model.eval()
        for run, keep in passes:
            current["keep"] = keep
            run()
    finally:
        for h in handles:
            h.remove()
    return {name: sums[name] / max(counts[name], 1) for name in names}


def forget_specificity(forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor],
                       eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per layer and row, how much more the forget samples use it than the retain samples: mean |activation| on
    the forget set over that on the retain set (selective pruning, Pochinkov & Schoots 2024, scores feed-forward
    neurons by this ratio). A row only the forget set activates scores highest; one the retain set needs most,
    lowest. `eps` (in activation units) keeps a row silent on both sets finite and low."""
    return {name: (forget[name] + eps) / (retain[name] + eps) for name in forget}

"""Losses and label transforms the baselines share (pure functions of tensors, unit-tested), and the forget losses
of language models (gradient difference, NPO) that PruneLoRA's variants and the LM baselines share. MixUp, which the
original's recipe may use, is part of the engine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the softened distributions softmax(logits / T), averaged over the batch.

    This is the distillation loss of SCRUB and Bad Teacher; Hinton's T^2 factor is left to the caller. In nats per
    sample (`reduction='batchmean'`), as SCRUB's reference computes it. Bad Teacher's reference calls `F.kl_div`
    with the default reduction `mean`, which also divides by the number of classes: its loss is this one / C.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from each true label (Random Labels, SalUn)."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


def l1_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Sum of absolute values of all `params` (the l1-sparse penalty, before its weight)."""
    return sum(p.abs().sum() for p in params)


def linear_decay(alpha: float, epoch: int, epochs: int) -> float:
    """alpha * (1 - epoch / epochs): l1-sparse's penalty weight in 0-based `epoch`, from alpha down to alpha/epochs."""
    return alpha * (1.0 - epoch / epochs)


# ---------------------------------------------------------------- forget losses of language models (per answer)


def gradient_difference(retain_loss: torch.Tensor, forget_loss: torch.Tensor, alpha: float = 1.0,
                        gamma: float = 1.0) -> torch.Tensor:
    """GradDiff (Liu et al. 2022; open-unlearning's `GradDiff`): alpha x the retain NLL - gamma x the forget NLL,
    both token means over their batch (nats per token); open-unlearning's defaults alpha = gamma = 1."""
    return alpha * retain_loss - gamma * forget_loss


def npo(nll: torch.Tensor, reference_nll: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO (Zhang et al. 2024, "Negative Preference Optimization"), per forget answer with summed-token NLL `nll`
    under the model and `reference_nll` under the reference (the model before unlearning), both (B,) in nats:

        (2 / beta) x mean log(1 + (pi / pi_ref) ** beta) = (2 / beta) x mean softplus(beta x (nll_ref - nll))

    which is open-unlearning's `-logsigmoid(beta x (nll - nll_ref)) x 2 / beta`. It falls from 2 log 2 / beta
    (= 13.9 at beta 0.1, the model at the reference) towards 0 as the answers' likelihood drops, and its gradient
    fades with it: unlike gradient ascent it does not push forever. beta 0.1 as its paper sets it."""
    return F.softplus(beta * (reference_nll - nll)).mean() * 2.0 / beta

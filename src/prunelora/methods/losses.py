"""Losses and label transforms the baselines share (pure functions of tensors, unit-tested). MixUp, which the
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

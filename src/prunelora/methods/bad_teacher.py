"""Bad Teacher (Chundawat et al. AAAI 2023, "Can Bad Teaching Induce Forgetting?"): distil the student (a
copy of the original) from two frozen teachers at once: the original (competent) on retain samples and a
randomly initialised model of the same architecture (incompetent) on forget samples. Loss per batch:
KL_T(teacher_i || student) with teacher_i chosen per sample; data: the forget set plus a random
`retain_share` of the retain set, shuffled together.

Reference defaults: T 1, Adam, lr 1e-4, 1 epoch, 30% of the retain set, batch 256, KL with PyTorch's default
reduction `mean` (divided by batch x classes). Ours: lr 1e-3, batch 128 (`unlearn.batch_size`; set
`hparams.bad_teacher.batch_size=256` for the reference's), KL per sample (`batchmean`, larger by the class count:
a constant factor that Adam's per-weight scaling almost cancels). On the default one epoch is five steps (about
80 on CIFAR-10); lr 1e-4 gave UA 6, lr 1e-3 UA 100 with RA 98.1 (98.8 with 5 epochs).
"""

from __future__ import annotations

import torch

from ..engine.loop import fit
from ..models import create_model
from .losses import kl_to_teacher
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze


def random_teacher(task: UnlearnTask, seed: int, device: torch.device) -> torch.nn.Module:
    """A freshly initialised model of the original's architecture (frozen, eval mode)."""
    cfg, data = task.config, task.data
    torch.manual_seed(seed)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size).to(device)
    return task.original_like(model)


def bad_teacher(model, task: UnlearnTask, ctx) -> Unlearned:
    hp, recipe = task.hparams, task.unlearn_recipe()
    good, bad = task.original_like(model), random_teacher(task, ctx.seed + 1, ctx.device)
    unfreeze(model)
    generator = torch.Generator().manual_seed(ctx.seed)
    retain = task.splits.retain
    keep = retain[torch.randperm(len(retain), generator=generator)[: round(hp.retain_share * len(retain))]]
    forget = task.forget_mask(ctx.device)

    def objective(logits, b):
        with torch.no_grad():
            target = torch.where(forget[b.rows, None], bad(b.x), good(b.x)).float()
        return kl_to_teacher(logits, target, hp.temperature)

    history = fit(model, task.data, torch.cat([task.splits.forget, keep]), recipe, ctx, desc="bad_teacher",
                  objective=objective, bn_index=retain)
    return Unlearned(model, recipe.epochs, {"trainable_params": trainable_parameters(model), "history": history})

"""SCRUB (Kurmanji et al. NeurIPS 2023, "Towards Unbounded Machine Unlearning"): the student (a copy of the
original) moves away from the original (the teacher, frozen) on the forget set and stays close to it on
the retain set, in alternating passes.

- max step (an epoch over the forget set, in the first `max_epochs` epochs): loss = -KL_T(teacher || student)
- min step (an epoch over the retain set, every epoch): loss = gamma * CE + alpha * KL_T(teacher || student)
KL_T is the distillation KL at temperature T times T^2. One optimizer and one learning-rate schedule span every
pass. BatchNorm follows `unlearn.bn` as for every method: `train` (the reference's model.train() in every pass),
`frozen`, `refit` (statistics recomputed over the retain set before the first pass, then fixed) or the default
`recalibrate` (trained as `train`, statistics recomputed over the retain set after the last pass).

Paper defaults (CIFAR-10 ResNet-18): T 4, alpha 0.001, gamma 0.99, 2 max steps (msteps) in 3-10 epochs,
SGD lr 5e-4, constant rate. Ours: the same loss weights, the `unlearn` recipe (Adam, lr 1e-3, 5 epochs, constant).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..engine.loop import fit, make_optimizer, make_schedule, recalibrate_bn, steps_per_epoch
from .losses import kl_to_teacher
from .protocol import Unlearned, UnlearnTask, trainable_parameters, unfreeze

# BatchNorm within one pass: recalibrate and refit recompute the statistics once for the whole run (after the
# last pass / before the first), not after every pass
_PASS_BN = {"recalibrate": "train", "refit": "frozen"}


def scrub(model, task: UnlearnTask, ctx) -> Unlearned:
    hp, recipe = task.hparams, task.unlearn_recipe()
    forget, retain = task.splits.forget, task.splits.retain
    teacher = task.original_like(model)
    unfreeze(model)
    optimizer = make_optimizer([(n, p) for n, p in model.named_parameters() if p.requires_grad], recipe)
    max_passes = min(hp.max_epochs, recipe.epochs)
    steps = max_passes * steps_per_epoch(len(forget), recipe.batch_size) + recipe.epochs * steps_per_epoch(
        len(retain), recipe.batch_size)
    schedule = make_schedule(optimizer, recipe, steps)  # one schedule over every pass (None when constant)
    t2 = hp.temperature**2

    def kl(logits, x):
        with torch.no_grad():
            target = teacher(x).float()
        return t2 * kl_to_teacher(logits, target, hp.temperature)

    if recipe.bn == "refit":
        recalibrate_bn(model, task.data, retain, ctx)
    one_pass = dataclasses.replace(recipe, epochs=1, bn=_PASS_BN.get(recipe.bn, recipe.bn), schedule="constant")
    history = []
    for epoch in range(recipe.epochs):
        epoch_ctx = dataclasses.replace(ctx, seed=ctx.seed + epoch)  # a new batch order every epoch
        if epoch < max_passes:
            h = fit(model, task.data, forget, one_pass, epoch_ctx, desc="scrub max", optimizer=optimizer,
                    schedule=schedule, objective=lambda logits, b: -kl(logits, b.x))
            history += [{**h[0], "epoch": epoch + 1, "step": "max"}]
        h = fit(model, task.data, retain, one_pass, epoch_ctx, desc="scrub min", optimizer=optimizer, schedule=schedule,
                objective=lambda logits, b: hp.gamma * F.cross_entropy(logits, b.y) + hp.alpha * kl(logits, b.x))
        history += [{**h[0], "epoch": epoch + 1, "step": "min"}]
    if recipe.bn == "recalibrate":
        recalibrate_bn(model, task.data, retain, ctx)
    model.eval()
    return Unlearned(model, recipe.epochs, {"trainable_params": trainable_parameters(model), "history": history})

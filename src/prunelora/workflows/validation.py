"""The validation split, and the objectives `prunelora tune` and `eval.select=best` score with. Never the test set.

A share of each class of the train set (`eval.val_fraction`, seed `eval.val_seed`) is carved out; for a request of
samples, only among the samples kept. The **validation view** is the data set with those samples as its test set
and the rest as its train set: the real test set is not in it. Every model the tune scores (the original, retrain,
each trial) trains on the view's train set, so the validation samples play the part the test set plays in a run:
retain-validation (the kept classes) for TA, forget-validation (held-out samples of the forgotten classes) for
forget TA. A run with `eval.select=best` trains on the same reduced train set and reports on the real test set.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import config as C
from ..data import (
    ImageData,
    Splits,
    load_dataset,
    make_sample_splits,
    make_splits,
    request_rows,
)
from ..engine.context import Context
from ..engine.loop import recalibrate_bn
from ..metrics.evaluate import avg_gap, outputs, quality


def forget_rows(forget: C.ForgetConfig, data: ImageData) -> tuple[list[int] | None, torch.Tensor]:
    """(forgotten classes or None for a request of samples, boolean mask of the forget set over the train set),
    read from the train labels alone."""
    classes, rows = request_rows(forget, data.y_train, data.classes)
    mask = torch.zeros(len(data.y_train), dtype=torch.bool)
    mask[rows] = True
    return classes, mask


def carve(data: ImageData, cfg: C.ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor, list[int] | None, torch.Tensor]:
    """(kept train rows, validation rows, forgotten classes or None, forget mask over the train set)."""
    classes, forget = forget_rows(cfg.forget, data)
    eligible = torch.ones_like(forget) if classes is not None else ~forget  # samples to forget stay to be forgotten
    from ..data.splits import validation_index

    val = validation_index(data.y_train, eligible, cfg.eval.val_fraction, cfg.eval.val_seed)
    keep = torch.ones(len(forget), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val, classes, forget


def held_out(data: ImageData, keep: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> ImageData:
    """`data` with only train rows `keep` as its train set and the given test set (every field set explicitly: the
    test tensors of `data` are not read)."""
    device = data.x_train.device
    return ImageData(data.name, data.x_train[keep.to(device)], data.y_train[keep.to(device)], test_x, test_y,
                     data.classes, data.mean, data.std, data.augment, train_rows=keep)


def view_splits(view: ImageData, classes: list[int] | None, forget: torch.Tensor, keep: torch.Tensor) -> Splits:
    """The request's splits in a view: class requests by label, sample requests by the kept forget rows."""
    if classes is not None:
        return make_splits(view.y_train.cpu(), view.y_test.cpu(), classes)
    return make_sample_splits(view.y_train.cpu(), view.y_test.cpu(), torch.nonzero(forget[keep]).flatten())


@dataclass
class Validation:
    """The validation view (validation samples as its test set), its splits, and retrain's metrics on it."""

    data: ImageData
    splits: Splits
    objective: str  # gap | retrain_free
    reference: dict | None = None  # retrain's metrics on the view (for gap), set once retrain is known

    def metrics(self, model: nn.Module, ctx: Context, batch_size: int, seed: int) -> dict:
        """UA, MIA, RA on the view's train set, TA = retain-validation and forget_TA = forget-validation accuracy."""
        return quality(*outputs(model, self.data, ctx, batch_size), self.data, self.splits, seed)

    def score(self, metrics: dict) -> float:
        return objective_value(metrics, self.reference, self.objective)


def validation_view(cfg: C.ExperimentConfig, data: ImageData) -> Validation:
    """The validation view of the loaded data set for `cfg`'s request: never reads `data`'s test set."""
    keep, val, classes, forget = carve(data, cfg)
    device = data.x_train.device
    view = held_out(data, keep, data.x_train[val.to(device)], data.y_train[val.to(device)])
    return Validation(view, view_splits(view, classes, forget, keep), cfg.eval.objective)


def selection_data(cfg: C.ExperimentConfig, data: ImageData) -> tuple[ImageData, Splits, Validation]:
    """For a run with eval.select=best: the data it trains and reports on (the train set without the validation
    samples, the real test set), its splits, and the validation view over the same train rows."""
    keep, val, classes, forget = carve(data, cfg)
    run_data = held_out(data, keep, data.x_test, data.y_test)
    val = val.to(data.x_train.device)
    view = dataclasses.replace(run_data, x_test=data.x_train[val], y_test=data.y_train[val])  # train tensors shared
    validation = Validation(view, view_splits(view, classes, forget, keep), cfg.eval.objective)
    return run_data, view_splits(run_data, classes, forget, keep), validation


def open_validation(cfg: C.ExperimentConfig) -> Validation:
    """Load the data set and return its validation view (what `prunelora tune` works on)."""
    return validation_view(cfg, load_dataset(cfg.data))


def objective_value(metrics: dict, reference: dict | None, name: str) -> float:
    """The validation objective in points, lower is better: `gap` = Avg. gap to retrain's `reference` over UA, MIA,
    RA and TA (here the validation accuracy); `retrain_free` = mean of the forget-validation accuracy (0 when the
    classes are gone) and 100 - the retain-validation accuracy."""
    if name == "gap":
        return avg_gap(metrics, reference)
    return float(np.mean([metrics["forget_TA"], 100.0 - metrics["TA"]]))


class BestEpoch:
    """A `fit` monitor for eval.select=best: after every epoch it scores a finished copy of the model (BatchNorm
    recalibrated as the method will, LoRA merged) on the validation split and keeps the best copy. Draws no random
    numbers; its time is left out of the method's (the engine pauses the meter)."""

    def __init__(self, validation: Validation, bn: str, ctx: Context, batch_size: int, seed: int):
        self.validation, self.bn, self.ctx, self.batch_size, self.seed = validation, bn, ctx, batch_size, seed
        self.best: tuple[float, int, nn.Module] | None = None  # (objective, epoch, model)
        self.epochs = 0

    def __call__(self, model: nn.Module) -> dict:
        self.epochs += 1
        final = finished_copy(model, self.validation, self.bn, self.ctx)
        value = self.validation.score(self.validation.metrics(final, self.ctx, self.batch_size, self.seed))
        if self.best is None or value < self.best[0]:
            self.best = (value, self.epochs, final)
        return {"val_objective": value}


def finished_copy(model: nn.Module, validation: Validation, bn: str, ctx: Context) -> nn.Module:
    """A copy of `model` as its method would return it now: BatchNorm recalibrated (bn=recalibrate), LoRA merged."""
    final = copy.deepcopy(model)
    if bn == "recalibrate":
        recalibrate_bn(final, validation.data, validation.splits.retain, ctx)
    if hasattr(final, "merge_and_unload"):
        final = final.merge_and_unload()
    return final.eval()


def both(*monitors):
    """One `fit` monitor calling every given one (None left out); their dicts merged."""
    active = [m for m in monitors if m is not None]
    if len(active) <= 1:
        return active[0] if active else None
    return lambda model: {k: v for m in active for k, v in m(model).items()}


__all__ = ["BestEpoch", "Validation", "both", "carve", "objective_value", "open_validation", "selection_data",
           "validation_view"]

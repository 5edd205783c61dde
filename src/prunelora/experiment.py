"""Opening an experiment: what every command (run, train, unlearn, evaluate) starts from.

`open_experiment(cfg)` resolves the config (checks every name, fills the model preset's defaults and every used
method's settings), makes the context (threads, device, processes, progress bars), loads the data set and splits it
by the deletion request. `train_original` then gives the original model: trained from scratch on the whole train
set, reloaded from the model cache, or read from `model.init`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import cache, dist
from . import config as C
from .checkpoints import load_weights, read_state_dict
from .context import Context, pick_device, seed_everything, set_threads
from .data import (
    ImageData,
    Splits,
    load_dataset,
    make_sample_splits,
    make_splits,
    random_indices,
    read_indices,
    resolve_classes,
)
from .engine import fit, recipe_from
from .errors import UserError
from .meter import CostMeter
from .methods import METHODS, UnlearnTask
from .methods.variants import base_method, variant_config
from .models import TIMM_PREFIX, arch_of, check_timm_name, classifier_name, create_model, get_spec, select_layers
from .resolve import check_out, resolve_config
from .validation import Validation, selection_data

__all__ = ["Experiment", "check_model", "make_context", "model_facts", "open_experiment", "prepare", "request_splits",
           "resolve_config", "train_original"]


@dataclass
class Experiment:
    """A resolved config with its context, data set and the request's splits."""

    config: C.ExperimentConfig  # resolved: no `None` left that a preset fills
    ctx: Context
    data: ImageData  # on the GPU (uint8) when the device is one
    splits: Splits  # of the whole request (for a sequence: of every request together)
    validation: Validation | None = None  # with eval.select=best: the validation view (of the same train rows)

    def for_seed(self, seed: int) -> Experiment:
        """The same experiment at another seed (the config's and the context's)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, seed=seed),
                                   ctx=dataclasses.replace(self.ctx, seed=seed))

    def task(self) -> UnlearnTask:
        """What a method works on: the data, the splits and the config."""
        return UnlearnTask(self.data, self.splits, self.config)


def open_experiment(cfg: C.ExperimentConfig, progress: bool = True, out: str | Path | None = None) -> Experiment:
    """Resolve `cfg`, check `out` (a directory to write, if given), make the context, load and split the data,
    check the model against it. Every user error in the settings is raised here, before anything is trained or
    written."""
    cfg = resolve_config(cfg)
    if out is not None:
        check_out(cfg, out)
    if cfg.model.name.startswith(TIMM_PREFIX):
        check_timm_name(cfg.model.name[len(TIMM_PREFIX):])
    ctx = make_context(cfg, progress)
    data, splits, validation = prepare_all(cfg, ctx.device)
    check_model(cfg, data)
    return Experiment(cfg, ctx, data, splits, validation)


def check_model(cfg: C.ExperimentConfig, data: ImageData) -> None:
    """What needs the model built (on the meta device: no memory, no initialisation): its architecture fits the
    data, and each method's (and variant's) pruning and LoRA targets select layers."""
    with torch.device("meta"):
        model = create_model(dataclasses.replace(cfg.model, pretrained=False), data.num_classes, data.in_chans,
                             data.image_size)
    family, depth = get_spec(cfg.model.name).family, arch_of(cfg.model).get("depth")
    for name in cfg.methods:
        settings = variant_config(cfg, name) if name in cfg.variants else cfg
        uses = METHODS.get(base_method(cfg, name)).uses
        if "pruning" in uses:
            pruned = select_layers(model, family, settings.pruning.targets, "prune", depth)
            rows = settings.pruning.forget_head_rows
            if rows != "l2" and classifier_name(model) not in pruned:
                raise UserError(f"pruning.forget_head_rows={rows} needs the head among the pruned layers, but "
                                f"pruning.targets={settings.pruning.targets} does not prune it")
        if "lora" in uses:
            select_layers(model, family, settings.lora.targets, "lora", depth)


def make_context(cfg: C.ExperimentConfig, progress: bool) -> Context:
    """Threads, device (each process its own GPU under torchrun) and the process group; progress bars on
    rank 0 only."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    w = dist.world()
    if w.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", w.local_rank)
    dist.init(device.type)
    progress = progress and w.main
    return Context(device, cfg.seed, progress, amp=cfg.amp, channels_last=cfg.channels_last, compile=cfg.compile,
                   graphs=cfg.cuda_graphs)


def prepare(cfg: C.ExperimentConfig, device: torch.device | None = None) -> tuple[ImageData, Splits]:
    """The data set (moved whole to `device`, as uint8, when it is a GPU) and the forget/retain/test splits."""
    return prepare_all(cfg, device)[:2]


def prepare_all(cfg: C.ExperimentConfig, device: torch.device | None = None
                ) -> tuple[ImageData, Splits, Validation | None]:
    """`prepare`, plus the validation view with eval.select=best; the data set is then its train set without the
    validation samples (and the real test set), the same train rows as the view's."""
    data = load_dataset(cfg.data)
    validation = None
    if cfg.eval.select == "best":
        data, splits, validation = selection_data(cfg, data)
    else:
        splits = request_splits(cfg.forget, data)
    if device is not None and device.type == "cuda":
        data = data.to(device)
        if validation is not None:
            validation.data = validation.data.to(device)
    return data, splits, validation


def request_splits(forget: C.ForgetConfig, data: ImageData) -> Splits:
    """The splits of a deletion request: whole classes, or samples (a random fraction or listed indices)."""
    n = len(data.y_train)
    if forget.fraction is not None:
        return make_sample_splits(data.y_train, data.y_test, random_indices(n, forget.fraction, forget.seed))
    if forget.indices is not None:
        return make_sample_splits(data.y_train, data.y_test, read_indices(forget.indices, n))
    if forget.sequence is not None:  # the classes of every request together
        return make_splits(data.y_train, data.y_test, resolve_classes([c for request in forget.sequence for c in request], data.classes))
    return make_splits(data.y_train, data.y_test, resolve_classes(forget.classes, data.classes))


def model_facts(data: ImageData, channels_removed: bool = False) -> dict:
    """What rebuilding a saved model needs besides its config: class count, input shape, removed channels."""
    return {"num_classes": data.num_classes, "in_chans": data.in_chans, "image_size": data.image_size,
            "channels_removed": channels_removed}


def train_original(cfg: C.ExperimentConfig, data: ImageData, ctx: Context) -> tuple[nn.Module, dict]:
    """Train the original model on the whole train set (or load `model.init`); returns it and its cost record."""
    seed_everything(cfg.seed)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    if cfg.model.init:
        load_weights(model, read_state_dict(cfg.model.init), cfg.model.init)
        record = {"time_s": 0.0, "epochs": 0, "peak_memory_mb": 0.0, "loaded_from": cfg.model.init}
        return ctx.prepare_model(model).eval(), record
    model = ctx.prepare_model(model)
    everything = torch.arange(len(data.y_train))
    key, described = cache.model_key("original", cfg, cfg.seed, data.source_rows(everything), ctx)
    if cfg.cache and (record := cache.load("original", key, model)) is not None:
        return model.eval(), record
    ctx.meter = CostMeter(ctx.device)
    with ctx.meter.measure():
        history = fit(model, data, everything, recipe_from(cfg.train), ctx, desc="original")
    record = {"time_s": ctx.meter.seconds, "epochs": cfg.train.epochs, "peak_memory_mb": ctx.meter.peak_mb}
    if cfg.cache:
        cache.store("original", key, described, model, record)
    return model, {**record, "history": history}

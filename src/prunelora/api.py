"""Python API: the same functions the CLI calls.

    import prunelora
    results = prunelora.run(prunelora.load_config(overrides=["forget.classes=[3]"]), out="runs/demo")
    prunelora.train(cfg, "runs/original")
    prunelora.unlearn("runs/original/model.safetensors", "prunelora", "runs/unlearned")
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from . import config as C
from .errors import UserError
from .io import atomic_write, environment, load_weights, read_checkpoint, save_checkpoint
from .methods import UnlearnTask
from .metrics.evaluate import accuracy, predict
from .models import create_model
from .runner import (
    check_out_dir,
    combine_metrics,
    evaluate_model,
    make_context,
    prepare,
    resolve_config,
    train_original,
    unlearn_one,
)


def train(cfg: C.ExperimentConfig, out: str | Path, progress: bool = True) -> dict:
    """Train the original model on the whole train set; write OUT/model.safetensors (+ .yaml, metrics.json)."""
    cfg = resolve_config(cfg)
    out = Path(out)
    check_out_dir(out)
    ctx = make_context(cfg, progress)
    data, _ = prepare(cfg, ctx.device)
    model, record = train_original(cfg, data, ctx)
    record["test_acc"] = accuracy(predict(model, data, data.x_test, ctx), data.y_test.cpu().numpy())
    record["environment"] = environment(ctx.device, ctx.meter.kind)
    save_checkpoint(out / "model.safetensors", model, C.to_dict(cfg), {"role": "original"})
    atomic_write(out / "metrics.json", json.dumps(record, indent=2))
    return record


def load_model(checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None):
    """(state dict, resolved config) of a checkpoint; overrides may not change model.* or data.*."""
    state, saved, _ = read_checkpoint(checkpoint)
    fixed = C.from_dict(C.ExperimentConfig, saved)  # the checkpoint's own settings, newer keys at their defaults
    cfg = resolve_config(C.load_config(config_file, overrides, base=saved))
    for section in ("model", "data"):
        if getattr(cfg, section) != getattr(fixed, section):
            raise UserError(f"the checkpoint fixes the {section} settings; remove the {section}.* overrides")
    return state, cfg


def _build(state: dict, cfg: C.ExperimentConfig, data, checkpoint) -> nn.Module:
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    return load_weights(model, state, checkpoint)


def unlearn(
    checkpoint: str | Path, method: str, out: str | Path, overrides: list[str] = (),
    config_file: str | None = None, progress: bool = True,
) -> dict:
    """Unlearn a saved model with one method; write the unlearned model and its metrics to OUT."""
    state, cfg = load_model(checkpoint, list(overrides) + [f"methods=[{method}]"], config_file)
    out = Path(out)
    check_out_dir(out)
    ctx = make_context(cfg, progress)
    data, splits = prepare(cfg, ctx.device)
    original = ctx.prepare_model(_build(state, cfg, data, checkpoint))
    model, record = unlearn_one(method, original, UnlearnTask(data, splits, cfg), ctx)
    metrics = combine_metrics(evaluate_model(model, data, splits, cfg, ctx), record)
    info = {k: v for k, v in record.items() if k not in ("time_s", "peak_memory_mb", "history")}
    save_checkpoint(out / "model.safetensors", model, C.to_dict(cfg), {"role": "unlearned", "method": method})
    atomic_write(out / "metrics.json", json.dumps({
        "method": method, "seed": cfg.seed, "metrics": metrics, "info": info,
        "environment": environment(ctx.device, ctx.meter.kind),
    }, indent=2))
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None, out: str | Path | None = None
) -> dict:
    """UA, RA, TA, MIA... of a saved model for the forget request in its config (or the overrides)."""
    state, cfg = load_model(checkpoint, overrides, config_file)
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out '{out}' is a directory; evaluate writes one JSON file, pass a file name")
    ctx = make_context(cfg, progress=False)
    data, splits = prepare(cfg, ctx.device)
    model = ctx.prepare_model(_build(state, cfg, data, checkpoint))
    metrics = evaluate_model(model, data, splits, cfg, ctx)
    metrics["test_acc"] = accuracy(predict(model, data, data.x_test, ctx), data.y_test.cpu().numpy())
    if out is not None:
        atomic_write(out, json.dumps(metrics, indent=2))
    return metrics


__all__ = ["evaluate_checkpoint", "load_model", "train", "unlearn"]

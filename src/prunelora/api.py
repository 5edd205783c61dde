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
from .checkpoints import load_weights, read_checkpoint, save_checkpoint
from .environment import environment
from .errors import UserError
from .experiment import Experiment, model_facts, open_experiment, prepare, resolve_config, train_original
from .files import atomic_write
from .methods.run import unlearn_one
from .metrics.evaluate import accuracy, predict
from .metrics.scoring import combine_metrics, evaluate_model
from .models import create_model
from .pruning import match_shapes


def train(cfg: C.ExperimentConfig, out: str | Path, progress: bool = True) -> dict:
    """Train the original model on the whole train set; write OUT/model.safetensors (+ .yaml, metrics.json)."""
    out = Path(out)
    exp = open_experiment(cfg, progress, out)
    model, record = train_original(exp.config, exp.data, exp.ctx)
    record["test_acc"] = _test_accuracy(model, exp)
    record["environment"] = environment(exp.ctx.device, exp.ctx.meter.kind)
    save_checkpoint(out / "model.safetensors", model, C.to_dict(exp.config), {"role": "original", **model_facts(exp.data)})
    atomic_write(out / "metrics.json", json.dumps(record, indent=2))
    return record


def _test_accuracy(model: nn.Module, exp: Experiment) -> float:
    """Top-1 accuracy (%) on the whole test set."""
    data = exp.data
    return accuracy(predict(model, data, data.x_test, exp.ctx), data.y_test.cpu().numpy())


def load_model(checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None):
    """(state dict, resolved config) of a checkpoint; overrides may not change model.* or data.*."""
    state, cfg, _ = _load(checkpoint, overrides, config_file)
    return state, cfg


def load_module(checkpoint: str | Path) -> nn.Module:
    """The model of a checkpoint as a plain `nn.Module` in eval mode (channels removed or not)."""
    state, cfg, extra = _load(checkpoint)
    if "num_classes" in extra:
        shape = (extra["num_classes"], extra["in_chans"], extra["image_size"])
    else:  # checkpoints of `prunelora train`/`unlearn` before these facts were stored: read the data set
        shape = _shape(prepare(cfg)[0])
    return _build(state, cfg, shape, checkpoint, extra).eval()


def _load(checkpoint, overrides: list[str] = (), config_file: str | None = None):
    state, saved, extra = read_checkpoint(checkpoint)
    fixed = C.from_dict(C.ExperimentConfig, saved)  # the checkpoint's own settings, newer keys at their defaults
    cfg = resolve_config(C.load_config(config_file, overrides, base=saved))
    for section in ("model", "data"):
        if getattr(cfg, section) != getattr(fixed, section):
            raise UserError(f"the checkpoint fixes the {section} settings; remove the {section}.* overrides")
    return state, cfg, extra


def _build(state: dict, cfg: C.ExperimentConfig, shape: tuple[int, int, int], checkpoint, extra: dict) -> nn.Module:
    """The model of `cfg` for (classes, channels, image size), shrunk to the checkpoint's removed channels."""
    model = create_model(cfg.model, *shape)
    if extra.get("channels_removed"):
        match_shapes(model, state)
    return load_weights(model, state, checkpoint)


def _shape(data) -> tuple[int, int, int]:
    return data.num_classes, data.in_chans, data.image_size


def unlearn(
    checkpoint: str | Path, method: str, out: str | Path, overrides: list[str] = (),
    config_file: str | None = None, progress: bool = True,
) -> dict:
    """Unlearn a saved model with one method; write the unlearned model and its metrics to OUT."""
    state, cfg, extra = _load(checkpoint, list(overrides) + [f"methods=[{method}]"], config_file)
    out = Path(out)
    exp = open_experiment(cfg, progress, out)
    original = exp.ctx.prepare_model(_build(state, exp.config, _shape(exp.data), checkpoint, extra))
    model, record = unlearn_one(method, original, exp.task(), exp.ctx)
    metrics = combine_metrics(evaluate_model(model, exp.data, exp.splits, exp.config, exp.ctx), record)
    info = {k: v for k, v in record.items() if k not in ("time_s", "peak_memory_mb", "history")}
    facts = model_facts(exp.data, extra.get("channels_removed", False) or "removed_layers" in record)
    save_checkpoint(out / "model.safetensors", model, C.to_dict(exp.config), {"role": "unlearned", "method": method, **facts})
    atomic_write(out / "metrics.json", json.dumps({
        "method": method, "seed": exp.config.seed, "metrics": metrics, "info": info,
        "environment": environment(exp.ctx.device, exp.ctx.meter.kind),
    }, indent=2))
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None, out: str | Path | None = None
) -> dict:
    """UA, RA, TA, MIA... of a saved model for the forget request in its config (or the overrides)."""
    state, cfg, extra = _load(checkpoint, overrides, config_file)
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out '{out}' is a directory; evaluate writes one JSON file, pass a file name")
    exp = open_experiment(cfg, progress=False)
    model = exp.ctx.prepare_model(_build(state, exp.config, _shape(exp.data), checkpoint, extra))
    metrics = evaluate_model(model, exp.data, exp.splits, exp.config, exp.ctx)
    metrics["test_acc"] = _test_accuracy(model, exp)
    if out is not None:
        atomic_write(out, json.dumps(metrics, indent=2))
    return metrics


def export(run_dir: str | Path, method: str, out: str | Path, seed: int | None = None) -> dict:
    """Write method `method`'s model of a finished run (LoRA merged, masks or removed channels baked in) to
    OUT (safetensors + config), checked to load back with identical outputs. The run must have saved its
    models (`save_models=true`)."""
    import torch

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--run '{run_dir}' is not a prunelora run directory (no config.yaml); pass the --out of a prunelora run")
    cfg = C.load_config(run_dir / "config.yaml")
    if cfg.seeds and seed is None:
        raise UserError(f"run '{run_dir}' has seeds {cfg.seeds}; pick one with --seed")
    suffix = f"-seed{seed}" if cfg.seeds else ""
    source = run_dir / "models" / f"{method}{suffix}.safetensors"
    if not source.is_file():
        saved = sorted(p.stem for p in (run_dir / "models").glob("*.safetensors")) if (run_dir / "models").is_dir() else []
        hint = f"saved: {', '.join(saved)}" if saved else "run it again with save_models=true"
        raise UserError(f"run '{run_dir}' has no saved model for '{method}{suffix}' ({hint})")
    if out.is_dir():
        raise UserError(f"--out '{out}' is a directory; pass a .safetensors file name")
    model = load_module(source)
    _, config, extra = read_checkpoint(source)
    params = sum(p.numel() for p in model.parameters())
    save_checkpoint(out, model, config, {**extra, "role": "exported", "method": method, "params": params})
    probe = torch.randn(2, extra.get("in_chans", 1), extra.get("image_size", 8), extra.get("image_size", 8))
    with torch.no_grad():
        same = torch.equal(model(probe), load_module(out)(probe))
    if not same:  # a bug, not a user error
        raise RuntimeError(f"exported model '{out}' does not reproduce the run's outputs")
    return {"path": str(out), "method": method, "params": params, "channels_removed": extra.get("channels_removed", False)}


__all__ = ["evaluate_checkpoint", "export", "load_model", "load_module", "train", "unlearn"]

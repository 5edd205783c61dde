"""Python API: the same functions the CLI calls.

    import prunelora
    results = prunelora.run(prunelora.load_config(overrides=["forget.classes=[3]"]), out="runs/demo")
    prunelora.train(cfg, "runs/original")
    prunelora.unlearn("runs/original/model.safetensors", "prunelora", "runs/unlearned")

Each function checks its inputs and outputs (config, checkpoint, where it writes) before it imports PyTorch or
trains anything; a problem is a UserError. No output may replace what the command reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import config as C
from .errors import UserError
from .store.checkpoints import read_config
from .store.files import atomic_write, check_cache_dir, check_out_file, check_outputs, inside, same_path, to_json
from .workflows.checkpoint import build_model, data_shape, load_checkpoint, load_model, load_module
from .workflows.resolve import ENSEMBLE_METRICS, check_out, checkpoint_config, images_only, resolve_config

if TYPE_CHECKING:
    from torch import nn

    from .workflows.experiment import Experiment


MODEL_FILES = ("model.safetensors", "model.yaml", "metrics.json")  # what train and unlearn write in their --out


def train(cfg: C.ExperimentConfig, out: str | Path, progress: bool = True, force: bool = False) -> dict:
    """Train the original model on the whole train set; write OUT/model.safetensors (+ .yaml, metrics.json). A
    model of another config already there is refused unless `force` (it would be replaced)."""
    out = Path(out)
    check_cache_dir()
    check_outputs(out, MODEL_FILES)
    check_replaced(images_only(resolve_config(cfg), "train"), out / "model.safetensors", force)

    from .store.checkpoints import save_checkpoint
    from .store.environment import environment
    from .store.lock import out_lock
    from .workflows.experiment import model_facts, open_experiment, train_original

    with out_lock(out):
        exp = open_experiment(cfg, progress, out)
        model, record = train_original(exp.config, exp.data, exp.ctx)
        record["test_acc"] = _test_accuracy(model, exp)
        record["environment"] = environment(exp.ctx.device, exp.ctx.meter.kind)
        save_checkpoint(out / "model.safetensors", model, C.to_dict(exp.config), {"role": "original", **model_facts(exp.data)})
        atomic_write(out / "metrics.json", to_json(record))
    return record


def check_replaced(cfg: C.ExperimentConfig, path: Path, force: bool) -> None:
    """A checkpoint at `path` of another config (or one that cannot be read) is not replaced without `force`, as
    `prunelora run` keeps a run of another config."""
    if force or not path.is_file():
        return
    from .store.resume import first_difference

    try:
        saved, _ = read_config(path)
    except UserError:
        saved = None
    if saved != C.to_dict(cfg):
        where = f"{first_difference(saved, C.to_dict(cfg))} differs" if isinstance(saved, dict) else "it is unreadable"
        raise UserError(f"--out '{path.parent}' holds the model of another config ({where}); use another --out, or "
                        "--force to replace it")


def _test_accuracy(model: nn.Module, exp: Experiment) -> float:
    """Top-1 accuracy (%) on the whole test set."""
    from .metrics.evaluate import accuracy, predict

    data = exp.data
    return accuracy(predict(model, data, data.x_test, exp.ctx), data.y_test.cpu().numpy())


def unlearn(
    checkpoint: str | Path, method: str, out: str | Path, overrides: list[str] = (),
    config_file: str | None = None, progress: bool = True,
) -> dict:
    """Unlearn a saved model with one method; write the unlearned model and its metrics to OUT (never the folder of
    the checkpoint it reads)."""
    out = Path(out)
    cfg, _ = checkpoint_config(checkpoint, list(overrides) + [f"methods=[{method}]"], config_file)
    images_only(cfg, "unlearn")
    check_out(cfg, out, {"--checkpoint": checkpoint})
    check_cache_dir()
    check_outputs(out, MODEL_FILES)

    from .store.lock import out_lock

    with out_lock(out):
        return _unlearn(checkpoint, method, out, overrides, config_file, progress)


def _unlearn(checkpoint, method: str, out: Path, overrides, config_file, progress: bool) -> dict:
    from .metrics.scoring import combine_metrics, evaluate_model, record_info
    from .store.checkpoints import save_checkpoint
    from .store.environment import environment
    from .workflows.experiment import model_facts, open_experiment
    from .workflows.unlearn import retrain_reference, unlearn_one

    state, cfg, extra = load_checkpoint(checkpoint, list(overrides) + [f"methods=[{method}]"], config_file)
    exp = open_experiment(cfg, progress, out)
    original = exp.ctx.prepare_model(build_model(state, exp.config, data_shape(exp.data), checkpoint, extra))
    validation = exp.validation and retrain_reference(exp.validation, original, exp.task(), exp.ctx)
    model, record = unlearn_one(method, original, exp.task(), exp.ctx, validation)
    metrics = combine_metrics(evaluate_model(model, exp.data, exp.splits, exp.config, exp.ctx, method=method), record)
    info = record_info(record, "history")
    facts = model_facts(exp.data, extra.get("channels_removed", False) or "removed_layers" in record)
    save_checkpoint(out / "model.safetensors", model, C.to_dict(exp.config), {"role": "unlearned", "method": method, **facts})
    atomic_write(out / "metrics.json", to_json({
        "method": method, "seed": exp.config.seed, "metrics": metrics, "info": info,
        "environment": environment(exp.ctx.device, exp.ctx.meter.kind),
    }))
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None, out: str | Path | None = None
) -> dict:
    """UA, RA, TA, MIA... of a saved model for the forget request in its config (or the overrides); with `out`, also
    written there as JSON (never over the checkpoint or its config)."""
    cfg, extra = checkpoint_config(checkpoint, overrides, config_file)
    images_only(cfg, "evaluate")
    check_cache_dir()  # the evidence metrics may train models through the cache
    method = "original" if extra.get("role") == "original" else extra.get("method")
    wanted = [name for name in cfg.eval.evidence if name in ENSEMBLE_METRICS]
    if wanted and method is None:
        raise UserError(f"eval.evidence={wanted[0]} runs the method that made the model again on other seeds, and "
                        f"checkpoint '{checkpoint}' does not say which it was; evaluate a checkpoint written by "
                        "prunelora train, unlearn or export, or drop it from eval.evidence")
    if out is not None:
        check_out_file(out)
        ckpt = Path(checkpoint)
        if same_path(out, ckpt) or same_path(out, ckpt.with_suffix(".yaml")):
            raise UserError(f"--out '{out}' is the checkpoint being evaluated (or its config); pass another file name, "
                            "e.g. metrics.json")

    from .metrics.scoring import evaluate_model
    from .workflows.experiment import open_experiment

    state, cfg, extra = load_checkpoint(checkpoint, overrides, config_file)
    exp = open_experiment(cfg, progress=False)
    model = exp.ctx.prepare_model(build_model(state, exp.config, data_shape(exp.data), checkpoint, extra))
    metrics = evaluate_model(model, exp.data, exp.splits, exp.config, exp.ctx, method=method)
    metrics["test_acc"] = _test_accuracy(model, exp)
    if out is not None:
        atomic_write(out, to_json(metrics))
    return metrics


def export(run_dir: str | Path, method: str, out: str | Path, seed: int | None = None) -> dict:
    """Write method `method`'s model of a finished run (LoRA merged, masks or removed channels baked in) to
    OUT (safetensors + config), checked to load back with identical outputs. The run must have saved its
    models (`save_models=true`); only its own models/ is read, and OUT lies outside the run."""
    source, out = export_source(run_dir, method, out, seed)

    import torch

    from .store.checkpoints import read_checkpoint, save_checkpoint

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


def export_source(run_dir: str | Path, method: str, out: str | Path, seed: int | None = None) -> tuple[Path, Path]:
    """(the saved model to export, the file to write) after every check of `export`'s arguments."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--run '{run_dir}' is not a prunelora run directory (no config.yaml); pass the --out of a prunelora run")
    cfg = images_only(resolve_config(C.load_config(run_dir / "config.yaml")), "export")
    if method not in cfg.methods:
        raise UserError(f"--method '{method}' did not run in '{run_dir}'; it ran {', '.join(cfg.methods)}")
    if cfg.seeds and seed is None:
        raise UserError(f"run '{run_dir}' has seeds {cfg.seeds}; pick one with --seed")
    if cfg.seeds and seed not in cfg.seeds:
        raise UserError(f"--seed {seed} is not a seed of run '{run_dir}'; it has seeds {cfg.seeds}")
    if not cfg.seeds and seed is not None and seed != cfg.seed:
        raise UserError(f"--seed {seed} is not the seed of run '{run_dir}', which ran seed {cfg.seed} alone; drop --seed")
    if cfg.forget.sequence is not None:
        raise UserError(f"run '{run_dir}' is a sequence of requests, whose models are saved per request "
                        "(models/<method>-request<K>.safetensors); load those with prunelora.load_module")
    if out.suffix != ".safetensors":
        raise UserError(f"--out '{out}' must name a .safetensors file (its config is written beside it as .yaml), "
                        f"e.g. {out.with_suffix('.safetensors')}")
    check_out_file(out)
    models = run_dir / "models"
    if any(same_path(out.parent, folder) for folder in (run_dir, models)):
        raise UserError(f"--out '{out}' lies in run '{run_dir}', whose files export reads; pass a path outside it")
    source = models / f"{method}{f'-seed{seed}' if cfg.seeds else ''}.safetensors"
    if not source.is_file():
        saved = sorted(p.stem for p in models.glob("*.safetensors")) if models.is_dir() else []
        hint = f"saved: {', '.join(saved)}" if saved else "run it again with save_models=true"
        raise UserError(f"run '{run_dir}' has no saved model for '{source.stem}' ({hint})")
    if not inside(source, models):
        raise UserError(f"'{source}' links outside the run's models/; export reads only the models a run saved")
    saved, _ = read_config(source)
    if any(saved.get(key) != C.to_dict(cfg).get(key) for key in ("data", "model", "forget")):
        raise UserError(f"'{source}' was written by an earlier config of '{run_dir}'; run it again (with --force) to "
                        "save this config's models")
    return source, out


def verify(before: str | Path, after: str | Path, request: str | Path, out: str | Path, reference: str | Path | None = None,
           overrides: list[str] = (), config_file: str | None = None) -> dict:
    """Check a deletion and write OUT/receipt.json and OUT/receipt.md (`prunelora verify`); the receipt's "passed"
    says whether every check held."""
    from .workflows.verify import verify as run_checks

    return run_checks(before, after, request, out, reference, overrides, config_file)


__all__ = ["evaluate_checkpoint", "export", "load_model", "load_module", "train", "unlearn", "verify"]

"""Resolving a config, without PyTorch: every name checked against the catalogs (model, data set, methods,
variants and their settings, evidence metrics) and every `None` a preset fills filled in. The command line calls it
before it imports PyTorch, so that a mistake in the settings is reported at once; `experiment.open_experiment`
then checks what needs the data set or the model built. The same goes for a checkpoint's config
(`checkpoint_config`) and for where a command writes (`check_out`)."""

from __future__ import annotations

import copy
from pathlib import Path

from . import config as C
from .checkpoints import read_config
from .data.catalog import DATASETS, default_forget
from .errors import UserError
from .files import check_out_dir, same_path
from .methods.variants import resolve_methods
from .metrics.catalog import EVIDENCE
from .models.presets import arch_of, get_spec

ENSEMBLE_METRICS = ("forgetting_quality", "klom")  # evidence that unlearns originals of other seeds: needs a method


def resolve_config(cfg: C.ExperimentConfig) -> C.ExperimentConfig:
    """Check names and fill every `None` with the model preset's value; the result is what runs."""
    cfg = copy.deepcopy(cfg)
    spec = get_spec(cfg.model.name)
    arch_of(cfg.model)  # architecture keys the model takes
    DATASETS.get(cfg.data.name)
    resolve_methods(cfg)
    if cfg.forget.kind == "classes" and cfg.forget.classes is None and cfg.forget.sequence is None:
        cfg.forget.classes = default_forget(cfg.data.name)
    for name in cfg.eval.evidence:
        EVIDENCE.get(name)
    ensembles = [name for name in cfg.eval.evidence if name in ENSEMBLE_METRICS]
    if ensembles and cfg.forget.sequence is not None:
        raise UserError(f"eval.evidence={ensembles[0]} scores one request, not a sequence; drop it from eval.evidence "
                        "or run each request of forget.sequence on its own")
    t, d = cfg.train, spec.train_defaults
    t.epochs, t.optimizer = t.epochs or d.epochs, t.optimizer or d.optimizer
    t.lr = t.lr if t.lr is not None else d.lr
    t.weight_decay = t.weight_decay if t.weight_decay is not None else d.weight_decay
    cfg.lora.r = cfg.lora.r or spec.lora_r
    cfg.lora.alpha = cfg.lora.alpha if cfg.lora.alpha is not None else spec.lora_alpha
    return cfg


def checkpoint_config(checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None
                      ) -> tuple[C.ExperimentConfig, dict]:
    """(resolved config, extra facts) of a checkpoint with `config_file` and `overrides` applied; they may not change
    model.* or data.*, which the checkpoint fixes. Reads the file's header only."""
    saved, extra = read_config(checkpoint)
    fixed = C.from_dict(C.ExperimentConfig, saved)  # the checkpoint's own settings, newer keys at their defaults
    cfg = resolve_config(C.load_config(config_file, overrides, base=saved))
    for section in ("model", "data"):
        if getattr(cfg, section) != getattr(fixed, section):
            raise UserError(f"the checkpoint fixes the {section} settings; remove the {section}.* overrides")
    return cfg, extra


def check_out(cfg: C.ExperimentConfig, out: str | Path, reads: dict[str, str | Path | None] | None = None) -> None:
    """The folder a command writes (`out`) can be written, and holds no file it reads: `model.init` or the `reads`
    given ({what: path}), in `out` or in the run folders it writes (models/, progress/)."""
    out = Path(out)
    check_out_dir(out)
    reads = {"model.init": cfg.model.init, **(reads or {})}
    for what, path in reads.items():
        if path is not None and any(same_path(Path(path).parent, out / sub) for sub in ("", "models", "progress")):
            raise UserError(f"--out '{out}' holds {what} '{path}', which this command reads and would write over; "
                            "pass another --out")

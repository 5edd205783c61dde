"""prunelora: machine unlearning of image classifiers, PruneLoRA and its baselines, with honest metrics.

A run flows through the package in this order: `config` (the settings) -> `workflows.experiment` (resolved config,
context, data, splits, the original) -> `engine` (the one training loop) -> `methods` (each method, on a copy of the
original; `models` holds the architectures, pruning and adapters) -> `metrics` (scores, compared with retrain) ->
`report` (tables, plots, files); `store` keeps what lives on disk. `workflows.run.run` is the loop over seeds and
methods; `api` and `cli` are the same functions for Python and the command line.

Importing the package is fast: the public names below are imported when first used, and PyTorch with them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "evaluate_checkpoint": "api", "export": "api", "load_model": "api", "load_module": "api", "train": "api",
    "unlearn": "api", "verify": "api", "ExperimentConfig": "config", "load_config": "config", "UserError": "errors",
    "METHODS": "methods", "register_method": "methods", "MODELS": "models", "create_model": "models", "run": "workflows.run",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [
    "METHODS", "MODELS", "ExperimentConfig", "UserError", "create_model", "evaluate_checkpoint", "export", "load_config",
    "load_model", "load_module", "register_method", "run", "train", "unlearn", "verify",
]

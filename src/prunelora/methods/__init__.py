"""Unlearning methods, one file each, declared by name in `catalog.py` (`METHODS`).

- `catalog.py`: every method's name, summary, config sections and own settings, and where its function lives; read
  without importing PyTorch (`prunelora list`, config checks), the function imported when the method runs;
- `protocol.py`: what a method gets and returns (`UnlearnTask` and its services, `Unlearned`), `register_method`;
- `variants.py`: which settings a method runs with (`hparams.<method>`, variants), `method_task`;
- `losses.py`, `importance.py`: pieces the baselines share. The training loop is `prunelora.engine.loop`;
  `prunelora.workflows.unlearn` runs one method on a copy of the original, seeded and metered.

Importing this package imports no PyTorch: the names that need it (`UnlearnTask`, `Unlearned`, ...) are loaded from
`protocol.py` when first used.
"""

from __future__ import annotations

import importlib

from .catalog import METHODS, MethodConfig, MethodSpec, RecipeConfig, register_method
from .variants import method_task, resolve_methods

_FROM_PROTOCOL = ("UnlearnTask", "Unlearned", "trainable_parameters", "unfreeze")


def __getattr__(name: str):
    if name in _FROM_PROTOCOL:
        return getattr(importlib.import_module(f"{__name__}.protocol"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS", "MethodConfig", "MethodSpec", "RecipeConfig", "UnlearnTask", "Unlearned", "method_task", "register_method",
    "resolve_methods", "trainable_parameters", "unfreeze",
]

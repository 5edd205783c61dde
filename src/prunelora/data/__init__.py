"""Data sets (in-memory uint8 tensors) and forget/retain/test splits.

`catalog.py` names every data set and is read without PyTorch; the rest (`datasets.py`, `vision.py`, `splits.py`) is
imported when first used.
"""

from __future__ import annotations

import importlib

from .catalog import DATASETS, default_forget

_LAZY = {
    "ImageData": "datasets", "load_dataset": "datasets",
    "Splits": "splits", "make_sample_splits": "splits", "make_splits": "splits", "random_indices": "splits",
    "read_indices": "splits", "resolve_classes": "splits", "request_rows": "splits", "request_splits": "splits",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS", "ImageData", "Splits", "default_forget", "load_dataset", "make_sample_splits", "make_splits",
    "random_indices", "read_indices", "request_rows", "request_splits", "resolve_classes",
]

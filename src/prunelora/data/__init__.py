"""Data sets (in-memory uint8 tensors) and forget/retain/test splits."""

from . import vision  # noqa: F401  (registers the on-disk data sets)
from .datasets import DATASETS, ImageData, default_forget, load_dataset
from .splits import Splits, make_sample_splits, make_splits, random_indices, read_indices, resolve_classes

__all__ = [
           "DATASETS",
           "ImageData",
           "Splits",
           "default_forget",
           "load_dataset",
           "make_sample_splits",
           "make_splits",
           "random_indices",
           "read_indices",
           "resolve_classes",
]

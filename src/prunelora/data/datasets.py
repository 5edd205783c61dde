"""Data sets as in-memory uint8 tensors (N, C, H, W) plus normalisation statistics.

Images stay uint8 until a batch is normalised (`ImageData.normalise`): 4x less memory than float, and the same
layout serves the GPU path. No per-sample Python runs in the training loop.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import importlib.util
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UserError
from .catalog import DATASETS


@dataclass
class ImageData:
    """A labelled image set with its train/test split."""

    modality: ClassVar[str] = "image"
    name: str
    x_train: torch.Tensor  # uint8, (N, C, H, W)
    y_train: torch.Tensor  # int64, (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    augment: str = "none"  # training augmentation: none | crop | flip | crop_flip (see data/augment.py)
    # for a view with samples held out (validation.py): each train sample's row in the data set's own train set;
    # None = the train set as loaded. Model cache keys name samples by these rows
    train_rows: torch.Tensor | None = None
    # mean and std as (1, C, 1, 1) tensors per device, made once: a copy from host memory per batch would make
    # the host wait for the GPU, and is not allowed inside a CUDA graph
    _stats: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    _digest: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def digest(self) -> str:
        """SHA-256 of x_train, y_train, x_test, y_test (dtype, shape, bytes), made once per object: what the data
        holds, for model-cache keys and resumed runs (an image replaced under the same file name changes it).
        About 0.1 s for CIFAR-10's 180 MB on one core."""
        if self._digest is None:
            from ..store.checkpoints import tensors_digest

            self._digest = tensors_digest({k: getattr(self, k) for k in ("x_train", "y_train", "x_test", "y_test")})
        return self._digest

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def to(self, device: torch.device) -> ImageData:
        """The same data set with its tensors on `device` (kept uint8: 1 byte per pixel)."""
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return dataclasses.replace(self, **moved)

    def source_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Train samples `index` of this view as rows of the data set's own train set (what they are, for caches)."""
        return index if self.train_rows is None else self.train_rows[index.to(self.train_rows.device)]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float, scaled to [0, 1] then standardised per channel (on x's device)."""
        if x.device not in self._stats:
            self._stats[x.device] = tuple(torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        mean, std = self._stats[x.device]
        return (x.float() / 255.0 - mean) / std


def load_dataset(config) -> ImageData:
    """Load the data set named by a DataConfig (loaders: `catalog.py`); `data.augment` overrides the data set's own
    augmentation. A class without a training sample is a UserError: nothing could learn or forget it."""
    data = DATASETS.get(config.name).load(config)
    if data.modality == "text":  # every author has its questions by construction; text is never augmented
        return data
    if config.augment is not None:
        data.augment = config.augment
    check_classes(data, config)
    return data


def check_classes(data: ImageData, config) -> None:
    counts = torch.bincount(data.y_train.cpu(), minlength=data.num_classes)
    empty = [data.classes[i] for i in range(data.num_classes) if counts[i] == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise UserError(f"data set '{data.name}' leaves class '{empty[0]}'{more} without a training sample; lower "
                        f"data.test_fraction (now {config.test_fraction}) or add training images of that class")


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized bilinearly to size x size, rounded back to uint8 (unchanged at that size)."""
    if x.shape[-1] == size:
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (std at least 1e-3)."""
    xf = x.float() / 255.0
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def stratified_split(labels: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test split of a data set that has none of its own: sorted indices of the train and the test
    samples, `data.test_fraction` held out per class (stratified), drawn with `data.split_seed`."""
    from sklearn.model_selection import train_test_split

    n, k = len(labels), len(np.unique(labels))
    held_out = math.ceil(config.test_fraction * n)  # as train_test_split counts it
    if min(held_out, n - held_out) < k:
        raise UserError(f"data.test_fraction is {config.test_fraction}; with {n} images of {k} classes it must leave "
                        f"each class train and test images: between {k / n:.4g} and {1 - k / n:.4g}")
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=config.test_fraction, stratify=labels, random_state=config.split_seed
    )
    return np.sort(idx_train), np.sort(idx_test)


def load_digits(config) -> ImageData:
    """scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes; ships with scikit-learn.

    Upsampled (bilinear) to `data.image_size` (default 12); split into train/test by a fixed stratified
    split (`data.test_fraction`, `data.split_seed`).
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink levels -> 0..255
    idx_train, idx_test = stratified_split(bunch.target, config)
    x = resize_uint8(torch.from_numpy(images).unsqueeze(1), config.image_size or 12)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    x_train, y_train = x[idx_train], y[idx_train]
    x_test, y_test = x[idx_test], y[idx_test]
    mean, std = channel_stats(x_train)
    return ImageData("digits", x_train, y_train, x_test, y_test, [str(i) for i in range(10)], mean, std)


ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers (dicts, lists, strings, numbers); any other global is refused."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes; a pure function
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}': only plain numpy arrays are allowed")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor, whatever its module
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)


def read_array_pickle(path: Path) -> np.ndarray:
    """A gzip-compressed pickle holding one numpy array, read without executing anything else."""
    try:
        with gzip.open(path, "rb") as f:
            value = ArrayUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise UserError(f"'{path}' is not a gzip-compressed numpy array ({err}); reinstall animal-mnist") from None
    if not isinstance(value, np.ndarray):
        raise UserError(f"'{path}' does not hold a numpy array; reinstall animal-mnist")
    return value


def _animal_dir(config) -> Path:
    if config.root:
        folder = Path(config.root).expanduser()
    else:
        spec = importlib.util.find_spec("animal_mnist")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                "data set 'animal-mnist' needs the animal-mnist wheel: pip install --no-deps animal-mnist==0.4 "
                "(its files are read directly; --no-deps skips its TensorFlow requirement)"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    missing = [name for name in ANIMAL_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"animal-mnist files {', '.join(missing)} not found in '{folder}'; set data.root to their folder")
    return folder


def load_animal_mnist(config) -> ImageData:
    """Animal-MNIST: 10,000 28x28 grey silhouettes of 10 animals (MIT), from the animal-mnist wheel.

    Harder than digits (cats, dogs and horses share shapes), so forgetting and membership signals show.
    Resized to `data.image_size` (default 12, the embedded default comparison); fixed stratified split
    (`data.test_fraction`, `data.split_seed`).
    """
    folder = _animal_dir(config)
    images, labels = (read_array_pickle(folder / name) for name in ANIMAL_FILES)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or len(images) != len(labels):
        raise UserError(f"animal-mnist files in '{folder}' have an unexpected shape or type; reinstall animal-mnist")
    idx_train, idx_test = stratified_split(labels, config)
    x = resize_uint8(torch.from_numpy(images).unsqueeze(1), config.image_size or 12)
    y = torch.from_numpy(labels.astype(np.int64))
    mean, std = channel_stats(x[idx_train])
    return ImageData("animal-mnist", x[idx_train], y[idx_train], x[idx_test], y[idx_test], list(ANIMAL_CLASSES), mean, std)

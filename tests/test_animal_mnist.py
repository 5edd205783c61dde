"""animal-mnist: files in the wheel's on-disk format (gzip-compressed pickles of numpy arrays), read safely."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle

import numpy as np
import pytest

from prunelora.config import DataConfig
from prunelora.data import load_dataset, resolve_classes
from prunelora.data.datasets import ANIMAL_CLASSES, ANIMAL_FILES, read_array_pickle
from prunelora.errors import UserError


def _write(path, value) -> None:
    with gzip.open(path, "wb") as f:
        pickle.dump(value, f, protocol=4)


@pytest.fixture
def animal_root(tmp_path):
    """100 images (10 per class) where class c is the constant image 20 * c + 5, with the wheel's file names."""
    labels = np.repeat(np.arange(10), 10).astype(np.int64)
    images = np.repeat((20 * labels + 5).astype(np.uint8)[:, None, None], 28, axis=1).repeat(28, axis=2)
    _write(tmp_path / ANIMAL_FILES[0], images)
    _write(tmp_path / ANIMAL_FILES[1], labels)
    return tmp_path


def test_loads_generated_files(animal_root):
    data = load_dataset(DataConfig(name="animal-mnist", root=str(animal_root), image_size=16))
    assert data.classes == ANIMAL_CLASSES and data.classes[2] == "cat"
    assert len(data.y_train) == 80 and len(data.y_test) == 20
    assert np.bincount(data.y_test.numpy()).tolist() == [2] * 10  # stratified
    assert data.x_train.shape[1:] == (1, 16, 16) and data.x_train.dtype.is_floating_point is False
    # constant images stay constant through resizing: the pixel value tells the label
    assert (data.x_train[:, 0, 0, 0].long() == 20 * data.y_train + 5).all()
    assert resolve_classes(["cat", "dog"], data.classes) == [2, 4]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_refuses_anything_but_arrays(tmp_path):
    path = tmp_path / "evil.gz"
    _write(path, _Exploit())
    with pytest.raises(UserError, match="only plain numpy arrays"):
        read_array_pickle(path)


def test_refuses_non_array_values(tmp_path):
    path = tmp_path / "list.gz"
    _write(path, [1, 2, 3])
    with pytest.raises(UserError, match="does not hold a numpy array"):
        read_array_pickle(path)


def test_missing_files_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="not found in"):
        load_dataset(DataConfig(name="animal-mnist", root=str(tmp_path)))


@pytest.mark.skipif(importlib.util.find_spec("animal_mnist") is None, reason="the animal-mnist wheel is not installed")
def test_the_installed_wheel():
    data = load_dataset(DataConfig(name="animal-mnist"))
    assert len(data.y_train) + len(data.y_test) == 10_000
    assert np.bincount(data.y_train.numpy()).tolist() == [800] * 10

"""What data sets exist, read without importing PyTorch: each one's name, one-line summary and loader (imported when
the data set is loaded), and the class a request forgets when none is named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry, resolve


@dataclass(frozen=True)
class DataSetSpec:
    name: str
    summary: str
    loader: Callable | str  # (DataConfig) -> ImageData, or 'module:function'

    def load(self, config):
        return resolve(self.loader)(config)


DATASETS: Registry[DataSetSpec] = Registry("data set")

_DISK = f"{__package__}.vision"
_MEMORY = f"{__package__}.datasets"
for _name, _loader, _summary in [
    ("digits", f"{_MEMORY}:load_digits",
     "scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes; ships with scikit-learn."),
    ("animal-mnist", f"{_MEMORY}:load_animal_mnist",
     "Animal-MNIST: 10,000 28x28 grey silhouettes of 10 animals (MIT), from the animal-mnist wheel."),
    ("cifar10", f"{_DISK}:load_cifar10", "CIFAR-10 (python batches, cifar-10-batches-py/ under data.root), checksums verified."),
    ("cifar100", f"{_DISK}:load_cifar100", "CIFAR-100, fine labels (cifar-100-python/ under data.root), checksums verified."),
    ("mnist", f"{_DISK}:load_mnist", "MNIST idx files (MNIST/raw/ under data.root)."),
    ("fashionmnist", f"{_DISK}:load_fashionmnist", "Fashion-MNIST idx files (FashionMNIST/raw/ under data.root)."),
    ("svhn", f"{_DISK}:load_svhn", "SVHN cropped digits (train_32x32.mat, test_32x32.mat under data.root), checksums verified."),
    ("imagefolder", f"{_DISK}:load_imagefolder",
     "Your own images: data.root/train/<class>/*.png|jpg and data.root/test/<class>/..., or data.root/<class>/..."),
]:
    DATASETS.add(_name, DataSetSpec(_name, _summary, _loader))

# the class a request forgets when forget.* is not set: one the original confuses with others, as CIFAR-10's cat
# with dog in the paper (animal-mnist: cat with dog and horse); class 3 elsewhere (CIFAR-10's cat)
DEFAULT_FORGET = {"animal-mnist": ["cat"]}


def default_forget(name: str) -> list[int | str]:
    return list(DEFAULT_FORGET.get(name, [3]))

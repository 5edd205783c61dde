"""What data sets exist, read without importing PyTorch: each one's name, one-line summary and loader (imported when
the data set is loaded), and the class a request forgets when none is named."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry, resolve


@dataclass(frozen=True)
class DataSetSpec:
    """A data set and, where they are fixed, its facts (what checks before loading it use; None = known only once
    loaded, as for an image folder)."""

    name: str
    summary: str
    loader: Callable | str  # (DataConfig) -> ImageData, or 'module:function'
    classes: tuple[str, ...] | None = None  # class names, in label order
    native_size: int | None = None  # image side in pixels, as stored
    default_size: int | None = None  # side after loading when data.image_size is not set (None: native_size)
    channels: int | None = None  # 1 grey, 3 RGB
    train_size: int | None = None  # images in its own train split (None with `samples`: split by data.test_fraction)
    test_size: int | None = None
    samples: int | None = None  # images in all, for a set without its own test split
    modality: str = "image"  # image | text (question-answer rows; its classes are authors)

    def load(self, config):
        return resolve(self.loader)(config)

    def sizes(self, test_fraction: float) -> tuple[int, int] | None:
        """(train, test) images: its own split, or the stratified data.test_fraction split, which holds out
        ceil(test_fraction * n) images as scikit-learn's train_test_split counts them (datasets.stratified_split)."""
        if self.samples is None:
            return None if self.train_size is None else (self.train_size, self.test_size)
        held_out = math.ceil(test_fraction * self.samples)
        return self.samples - held_out, held_out

    def image_size(self, requested: int | None) -> int | None:
        """The side the loaded images have for data.image_size=`requested`."""
        return requested or self.default_size or self.native_size


DATASETS: Registry[DataSetSpec] = Registry("data set")

_TEN = tuple(str(i) for i in range(10))
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = ("apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
            "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
            "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
            "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
            "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
            "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
            "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
            "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
            "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
            "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
            "woman", "worm")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_DISK = f"{__package__}.vision"
_MEMORY = f"{__package__}.datasets"
# the published sizes: CIFAR 50,000 / 10,000; (Fashion-)MNIST 60,000 / 10,000; SVHN 73,257 / 26,032 (no `extra`)
for _name, _loader, _summary, _facts in [
    ("digits", f"{_MEMORY}:load_digits",
     "scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes; ships with scikit-learn.",
     {"classes": _TEN, "native_size": 8, "default_size": 12, "channels": 1, "samples": 1797}),
    ("animal-mnist", f"{_MEMORY}:load_animal_mnist",
     "Animal-MNIST: 10,000 28x28 grey silhouettes of 10 animals (MIT), from the animal-mnist wheel.",
     {"classes": ANIMALS, "native_size": 28, "default_size": 12, "channels": 1, "samples": 10_000}),
    ("cifar10", f"{_DISK}:load_cifar10", "CIFAR-10 (python batches, cifar-10-batches-py/ under data.root), checksums verified.",
     {"classes": CIFAR10, "native_size": 32, "channels": 3, "train_size": 50_000, "test_size": 10_000}),
    ("cifar100", f"{_DISK}:load_cifar100", "CIFAR-100, fine labels (cifar-100-python/ under data.root), checksums verified.",
     {"classes": CIFAR100, "native_size": 32, "channels": 3, "train_size": 50_000, "test_size": 10_000}),
    ("mnist", f"{_DISK}:load_mnist", "MNIST idx files (MNIST/raw/ under data.root).",
     {"classes": _TEN, "native_size": 28, "channels": 1, "train_size": 60_000, "test_size": 10_000}),
    ("fashionmnist", f"{_DISK}:load_fashionmnist", "Fashion-MNIST idx files (FashionMNIST/raw/ under data.root).",
     {"classes": FASHION, "native_size": 28, "channels": 1, "train_size": 60_000, "test_size": 10_000}),
    ("svhn", f"{_DISK}:load_svhn", "SVHN cropped digits (train_32x32.mat, test_32x32.mat under data.root), checksums verified.",
     {"classes": _TEN, "native_size": 32, "channels": 3, "train_size": 73_257, "test_size": 26_032}),
    ("authors", f"{__package__}.text:load_authors",
     ("Text: generated fictitious authors (data.authors x data.questions question-answer pairs, holdout authors, "
      "extra facts), offline and seeded by data.split_seed; its classes are the authors."),
     {"modality": "text"}),
    ("imagefolder", f"{_DISK}:load_imagefolder",
     "Your own images: data.root/train/<class>/*.png|jpg and data.root/test/<class>/..., or data.root/<class>/...",
     {"default_size": 32}),
]:
    DATASETS.add(_name, DataSetSpec(_name, _summary, _loader, **_facts))


def class_names(config) -> list[str] | None:
    """The classes the data set of a DataConfig has, without loading it: the registry's, or an image folder's
    sub-folder names (as vision.load_imagefolder lists them); None when not known before loading."""
    spec = DATASETS.get(config.name)
    if spec.classes is not None:
        return list(spec.classes)
    if spec.modality == "text":  # generated: the authors' names, within a second and without PyTorch
        return [a.name for a in generate_authors(config).authors]
    if config.name != "imagefolder" or not config.root:
        return None
    root = Path(config.root).expanduser()
    folder = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
    try:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # missing or unreadable: the loader says so
        return None
    return classes if len(classes) >= 2 else None


# the class a request forgets when forget.* is not set: one the original confuses with others, as CIFAR-10's cat
# with dog in the paper (animal-mnist: cat with dog and horse); class 3 elsewhere (CIFAR-10's cat)
DEFAULT_FORGET = {"animal-mnist": ["cat"]}


def default_forget(name: str) -> list[int | str]:
    return list(DEFAULT_FORGET.get(name, [3]))


def holdout_count(authors: int) -> int:
    """Holdout authors beside `authors` trained ones: a tenth, at least two."""
    return max(2, authors // 10)


def generate_authors(config):
    """The generated text of a DataConfig (data.authors x data.questions, seeded by data.split_seed): the trained
    authors, a tenth as many holdout authors, one extra fact per author."""
    from .authors import generate

    return generate(n_authors=config.authors, questions=config.questions, holdout=holdout_count(config.authors),
                    facts=config.authors, seed=config.split_seed)


def is_text(data) -> bool:
    """Whether a loaded data set (`TextData`, `ImageData` or a stand-in with their attributes) holds text rows."""
    return getattr(data, "modality", "image") == "text"

"""Data sets read from disk in their published formats: CIFAR-10/100, SVHN, MNIST, Fashion-MNIST, image folders.

Files are read by our own code (no pickle beyond plain arrays, lists and dicts; SVHN's .mat through scipy;
MNIST's idx files through torchvision's reader) from `data.root`. Nothing is downloaded unless
`data.download=true`, which fetches with torchvision's downloaders. Where torchvision publishes checksums
(CIFAR, SVHN), every file is verified against them; `data.verify=false` skips that, for files made or
converted locally (the tests' generated files, a re-encoded copy). MNIST's raw files have no published
checksum of their own, so only their shapes are checked.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .datasets import ArrayUnpickler, ImageData, channel_stats, resize_uint8, stratified_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path, md5: str | None, config, name: str) -> Path:
    if not path.is_file():
        raise UserError(
            f"data set '{name}' not found: '{path}' is missing; set data.root to the folder that holds it, "
            f"or add data.download=true to fetch it"
        )
    if md5 and config.verify and _md5(path) != md5:
        raise UserError(
            f"'{path}' does not match the published checksum of {name}; re-download it, or set data.verify=false "
            f"for files you made or converted yourself"
        )
    return path


def _root(config, name: str) -> Path:
    if not config.root:
        raise UserError(f"data set '{name}' is read from disk: set data.root=DIR (add data.download=true to fetch it)")
    return Path(config.root).expanduser()


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(f"'{path}' is not a readable CIFAR batch ({err}); re-download it") from None


def _download(config, name: str, root: Path) -> None:
    """Fetch with torchvision's downloader (only when data.download=true)."""
    from torchvision import datasets as tv

    make = {
        "cifar10": lambda s: tv.CIFAR10(root, train=s, download=True),
        "cifar100": lambda s: tv.CIFAR100(root, train=s, download=True),
        "mnist": lambda s: tv.MNIST(root, train=s, download=True),
        "fashionmnist": lambda s: tv.FashionMNIST(root, train=s, download=True),
        "svhn": lambda s: tv.SVHN(root, split="train" if s else "test", download=True),
    }[name]
    try:
        make(True), make(False)
    except (OSError, RuntimeError) as err:  # network and archive errors, as one line
        raise UserError(f"could not download {name} into '{root}' ({type(err).__name__}: {err})") from None


def _finish(name, x_train, y_train, x_test, y_test, classes, config, native: int, augment: str = "none") -> ImageData:
    size = config.image_size or native
    x_train, x_test = resize_uint8(x_train, size), resize_uint8(x_test, size)
    mean, std = channel_stats(x_train)
    return ImageData(name, x_train, y_train, x_test, y_test, list(classes), mean, std, augment)


def _cifar(config, name: str) -> ImageData:
    from torchvision import datasets as tv

    spec = tv.CIFAR10 if name == "cifar10" else tv.CIFAR100
    root = _root(config, name)
    if config.download:
        _download(config, name, root)
    folder = root / spec.base_folder
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def read(files):
        batches = [_load_pickle(_check_file(folder / f, md5, config, name)) for f, md5 in files]
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)), torch.from_numpy(y)

    meta = _load_pickle(_check_file(folder / spec.meta["filename"], spec.meta["md5"], config, name))
    (x_train, y_train), (x_test, y_test) = read(spec.train_list), read(spec.test_list)
    return _finish(name, x_train, y_train, x_test, y_test, meta[spec.meta["key"]], config, 32, "crop_flip")


def load_cifar10(config) -> ImageData:
    """CIFAR-10 (python batches, cifar-10-batches-py/ under data.root), checksums verified."""
    return _cifar(config, "cifar10")


def load_cifar100(config) -> ImageData:
    """CIFAR-100, fine labels (cifar-100-python/ under data.root), checksums verified."""
    return _cifar(config, "cifar100")


def _mnist_like(config, name: str, folder_name: str, classes: list[str]) -> ImageData:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = _root(config, name)
    if config.download:
        _download(config, name, root)
    raw = root / folder_name / "raw"

    def read(prefix):
        images = _check_file(raw / f"{prefix}-images-idx3-ubyte", None, config, name)
        labels = _check_file(raw / f"{prefix}-labels-idx1-ubyte", None, config, name)
        try:
            x, y = read_image_file(str(images)), read_label_file(str(labels))
        except (AssertionError, RuntimeError, ValueError) as err:
            raise UserError(f"'{raw}' holds unreadable idx files ({err}); re-download {name}") from None
        if x.ndim != 3 or len(x) != len(y):
            raise UserError(f"'{raw}' holds idx files of unexpected shape; re-download {name}")
        return x.unsqueeze(1).contiguous(), y.long()

    (x_train, y_train), (x_test, y_test) = read("train"), read("t10k")
    return _finish(name, x_train, y_train, x_test, y_test, classes, config, 28)


def load_mnist(config) -> ImageData:
    """MNIST idx files (MNIST/raw/ under data.root)."""
    return _mnist_like(config, "mnist", "MNIST", [str(i) for i in range(10)])


def load_fashionmnist(config) -> ImageData:
    """Fashion-MNIST idx files (FashionMNIST/raw/ under data.root)."""
    from torchvision.datasets import FashionMNIST

    return _mnist_like(config, "fashionmnist", "FashionMNIST", list(FashionMNIST.classes))


def load_svhn(config) -> ImageData:
    """SVHN cropped digits (train_32x32.mat, test_32x32.mat under data.root), checksums verified."""
    from scipy.io import loadmat
    from torchvision.datasets import SVHN

    root = _root(config, "svhn")
    if config.download:
        _download(config, "svhn", root)

    def read(split):
        _, filename, md5 = SVHN.split_list[split]
        mat = loadmat(str(_check_file(root / filename, md5, config, "svhn")))
        x = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8))
        y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)  # the files label digit 0 as 10
        return x, y

    (x_train, y_train), (x_test, y_test) = read("train"), read("test")
    # digits must not be mirrored: crop only
    return _finish("svhn", x_train, y_train, x_test, y_test, [str(i) for i in range(10)], config, 32, "crop")


def _open(path: Path):
    """The decoded image (PIL), or a UserError naming the file: unreadable, truncated, or past PIL's
    decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`; PIL warns above it and refuses above twice it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"image '{path}' is too large to decode safely ({err}); shrink it or remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise UserError(f"cannot read image '{path}' ({err}); remove or replace it") from None


# modes of one intensity channel: a folder whose images are all of these modes stays grey (one channel)
GREY_MODES = ("L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# converted by PIL: palette colours, CMYK, YCbCr, LAB and HSV to RGB; alpha (RGBA, LA, PA, a palette's transparency)
# is dropped, the colour channels kept as stored (what convert("RGB") always did here)
RGB_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def _scaled(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """Integers of the range [low, high] mapped linearly onto 0..255, rounded (16-bit: 32768 -> 128)."""
    span = high - low
    return ((values.astype(np.int64) - low) * 255 + span // 2) // span


def _int_range(img, path: Path) -> tuple[np.ndarray, int, int]:
    """(values, low, high) of a 32-bit integer image ("I"): the range of the type the file stores, never the
    image's own maximum (a dark image must stay dark)."""
    values = np.asarray(img)
    if img.format == "PNG":  # PNG stores at most 16 bits per sample (older PIL opens them as "I")
        return values, 0, 2**16 - 1
    tags = getattr(img, "tag_v2", None)
    if img.format == "TIFF" and tags is not None:
        bits = tags.get(258, (32,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = tags.get(339, 1)
        signed = (fmt[0] if isinstance(fmt, tuple) else fmt) == 2
        if bits in (8, 16, 32):
            if signed:
                return values, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            return (values.view(np.uint32) if bits == 32 else values), 0, 2**bits - 1
    raise UserError(f"image '{path}' is a 32-bit integer image (mode I) of unknown value range; save it as 8- or "
                    "16-bit PNG")


def _as_8bit(img, path: Path):
    """The image as 8-bit PIL "L" (grey modes) or "RGB": 16- and 32-bit integers scaled from their type's range,
    floats ("F") read as 0..1, every other mode through PIL's conversion to RGB; a mode it cannot map is refused."""
    from PIL import Image

    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")  # 0 / 255
    if mode in UINT16_MODES:
        return Image.fromarray(_scaled(np.asarray(img), 0, 2**16 - 1).astype(np.uint8), "L")
    if mode == "I":
        return Image.fromarray(_scaled(*_int_range(img, path)).astype(np.uint8), "L")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise UserError(f"image '{path}' is a float image (mode F) with values outside 0..1 (from "
                            f"{np.nanmin(values):g} to {np.nanmax(values):g}); scale it to 0..1 or save it as 8-bit")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")
    if mode in RGB_MODES:
        try:
            return img.convert("RGB")
        except ValueError:  # a PIL without this conversion (LAB, HSV in old versions)
            pass
    raise UserError(f"image '{path}' has mode {mode}, which prunelora cannot read as RGB or grey; save it as RGB or "
                    "grey (L) PNG")


def _read_folder(folder: Path, classes: list[str], size: int):
    """(images uint8 N x 3 x size x size, labels, every image grey?) with each file decoded once."""
    from PIL import Image

    images, labels, grey = [], [], True
    for label, name in enumerate(classes):
        for path in sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            img = _open(path)
            grey &= img.mode in GREY_MODES
            img = _as_8bit(img, path)
            images.append(np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8))
            labels.append(label)
    if not images:
        raise UserError(f"image folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64), grey


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"image folder '{folder}' needs one sub-folder per class (at least two); found {len(classes)}")
    return classes


def load_imagefolder(config) -> ImageData:
    """Your own images: data.root/train/<class>/*.png|jpg and data.root/test/<class>/..., or data.root/<class>/...
    split by `data.test_fraction` (stratified, `data.split_seed`). Class names come from the folder names. Every
    image is read to 0..255 (`_as_8bit`: 16-bit by 65535, float as 0..1, alpha dropped); all grey: one channel."""
    root = _root(config, "imagefolder")
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist; set data.root to a folder of class sub-folders")
    size = config.image_size or 32
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _classes(root / "train")
        if _classes(root / "test") != classes:
            raise UserError(f"'{root}/train' and '{root}/test' must have the same class sub-folders")
        x_train, y_train, grey_train = _read_folder(root / "train", classes, size)
        x_test, y_test, grey_test = _read_folder(root / "test", classes, size)
        grey = grey_train and grey_test
    else:
        classes = _classes(root)
        x, y, grey = _read_folder(root, classes, size)
        try:
            idx_train, idx_test = stratified_split(y.numpy(), config)
        except ValueError as err:
            raise UserError(f"cannot split '{root}' into train and test ({err}); add images or use train/ and test/") from None
        x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
    if grey:  # every image grey: keep one channel
        x_train, x_test = x_train[:, :1].contiguous(), x_test[:, :1].contiguous()
    return _finish("imagefolder", x_train, y_train, x_test, y_test, classes, config, size)

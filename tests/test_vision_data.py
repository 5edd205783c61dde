"""On-disk data sets, loaded from small files the tests write in the real formats, through the user's code path."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from prunelora.cli import main
from prunelora.config import DataConfig
from prunelora.data import load_dataset
from prunelora.errors import UserError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pixels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Constant images whose value is 20 * label + 5: the label can be read back from any pixel."""
    return np.broadcast_to((20 * labels + 5).astype(np.uint8).reshape(-1, *[1] * len(shape)), (len(labels), *shape)).copy()


def _pickle(path, value) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=2)  # the published batches are protocol-2 pickles


def write_cifar10(root, per_class: int = 2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(10), per_class)
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": _pixels(labels, (3072,)), "labels": labels.tolist()})
    _pickle(folder / "test_batch", {"data": _pixels(labels, (3072,)), "labels": labels.tolist()})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES})
    return root


@pytest.fixture
def cifar10_root(tmp_path):
    return write_cifar10(tmp_path)


def test_cifar10_generated_files(cifar10_root):
    data = load_dataset(DataConfig(name="cifar10", root=str(cifar10_root), verify=False))
    assert data.classes == CIFAR10_NAMES
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert (data.x_train[:, 1, 5, 7].long() == 20 * data.y_train + 5).all()


def test_cifar10_checksums_are_verified(cifar10_root):
    with pytest.raises(UserError, match="published checksum.*data.verify=false"):
        load_dataset(DataConfig(name="cifar10", root=str(cifar10_root)))


def test_cifar_refuses_foreign_pickles(cifar10_root):
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    _pickle(cifar10_root / "cifar-10-batches-py" / "data_batch_1", Exploit())
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        load_dataset(DataConfig(name="cifar10", root=str(cifar10_root), verify=False))


def test_cifar100_generated_files(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    labels = np.arange(100)
    for split in ("train", "test"):
        _pickle(folder / split, {"data": _pixels(labels % 10, (3072,)), "fine_labels": labels.tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    data = load_dataset(DataConfig(name="cifar100", root=str(tmp_path), verify=False, image_size=16))
    assert data.num_classes == 100 and data.x_train.shape == (100, 3, 16, 16)


def _idx(path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_mnist_like_generated_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    labels = np.tile(np.arange(10, dtype=np.uint8), 3)
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", _pixels(labels, (28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = load_dataset(DataConfig(name=name, root=str(tmp_path)))
    assert data.x_train.shape == (30, 1, 28, 28) and data.y_test.tolist() == labels.tolist()
    assert (data.x_test[:, 0, 3, 3].long() == 20 * data.y_test + 5).all()


def test_svhn_generated_files(tmp_path):
    labels = np.tile(np.arange(10), 2)
    x = _pixels(labels, (3, 32, 32)).transpose(2, 3, 1, 0)  # the files store H, W, C, N
    for name in ("train_32x32.mat", "test_32x32.mat"):
        savemat(tmp_path / name, {"X": x, "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})
    data = load_dataset(DataConfig(name="svhn", root=str(tmp_path), verify=False))
    assert data.y_train.tolist() == labels.tolist()  # label 10 means digit 0
    assert (data.x_train[:, 2, 0, 0].long() == 20 * data.y_train + 5).all()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashionmnist", "svhn"])
def test_missing_files_say_where_and_how(tmp_path, name):
    with pytest.raises(UserError, match=f"data set '{name}' not found: '{tmp_path}.*data.download=true"):
        load_dataset(DataConfig(name=name, root=str(tmp_path)))


def write_image_folder(root, split: bool, mode: str = "RGB", per_class: int = 6):
    classes = ["cat", "dog", "horse"]
    for c, name in enumerate(classes):
        for part in ("train", "test") if split else ("",):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                value = 40 * c + 30 + i
                Image.new(mode, (20, 20), value if mode == "L" else (value, 0, 255 - value)).save(folder / f"{i}.png")
    return classes


def test_imagefolder_with_train_and_test(tmp_path):
    classes = write_image_folder(tmp_path, split=True)
    data = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8))
    assert data.classes == classes and data.x_train.shape == (18, 3, 8, 8) and len(data.y_test) == 18
    assert (data.x_train[:, 0, 4, 4].long() == 40 * data.y_train + 30 + torch_arange_mod(data.y_train)).all()


def torch_arange_mod(labels):
    """Position of each image inside its class folder (the folders are read in sorted order)."""
    counts, out = {}, []
    for y in labels.tolist():
        out.append(counts.get(y, 0))
        counts[y] = out[-1] + 1
    return labels.new_tensor(out)


def test_imagefolder_single_folder_is_split_and_grey_stays_grey(tmp_path):
    write_image_folder(tmp_path, split=False, mode="L", per_class=10)
    data = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), test_fraction=0.2))
    assert data.in_chans == 1 and data.image_size == 32
    assert len(data.y_train) == 24 and np.bincount(data.y_test.numpy()).tolist() == [2, 2, 2]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))
    (tmp_path / "only").mkdir()
    with pytest.raises(UserError, match="one sub-folder per class"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))
    (tmp_path / "other").mkdir()
    (tmp_path / "only" / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))


TINY = ["model.width=4", "data.image_size=8", "train.epochs=1", "unlearn.epochs=1", "threads=1", "-q"]


def test_run_end_to_end_on_cifar_files(tmp_path, capsys):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["run", "--out", str(out), "data.name=cifar10", f"data.root={tmp_path / 'data'}", "data.verify=false",
            "forget.classes=[cat]", "methods=retrain,prunelora", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["forget_classes"] == [3] and results["data"]["sizes"]["forget"] == 10
    assert "cat" in (out / "results.md").read_text()


def test_run_end_to_end_on_an_image_folder(tmp_path, capsys):
    write_image_folder(tmp_path / "images", split=True)
    out = tmp_path / "out"
    argv = ["run", "--out", str(out), "data.name=imagefolder", f"data.root={tmp_path / 'images'}",
            "forget.classes=[dog]", "methods=finetune,prunelora", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["classes"] == ["cat", "dog", "horse"] and results["data"]["forget_classes"] == [1]
    assert [r["method"] for r in results["runs"]] == ["original", "finetune", "prunelora"]


@pytest.mark.parametrize(
    "config, shrink, augment",
    [
        ("cifar10_resnet50.yaml", ["model.width=4"], "crop_flip"),
        ("cifar10_vit.yaml", ["model.width=16", "model.depth=2", "model.heads=2"], "flip"),
    ],
)
def test_paper_configs_run_on_cifar_files(tmp_path, capsys, config, shrink, augment):
    """The paper's configs, shrunk to a tiny model, run end to end on CIFAR-format files."""
    from pathlib import Path

    write_cifar10(tmp_path / "data")
    path = Path(__file__).resolve().parent.parent / "configs" / "paper" / config
    out = tmp_path / "out"
    argv = ["run", "--config", str(path), "--out", str(out), f"data.root={tmp_path / 'data'}", "data.verify=false",
            "train.epochs=1", "unlearn.epochs=1", "data.image_size=8", "threads=1", "-q",
            "methods=retrain,prunelora", *shrink]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["data"]["augment"] == augment and results["data"]["forget_classes"] == [3]
    if config == "cifar10_vit.yaml":  # the authors' recipe, and LoRA on the head alone: r 16 x (width 16 + 10 rows)
        assert (results["config"]["train"]["mixup"], results["config"]["train"]["decay"]) == (0.2, "weights")
        info = next(r["info"] for r in results["runs"] if r["method"] == "prunelora")
        assert info["lora_layers"] == 1 and info["trainable_params"] == 16 * (16 + 10)

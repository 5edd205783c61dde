"""Data sets and forget/retain/test splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelora.config import DataConfig
from prunelora.data import load_dataset, make_splits, resolve_classes
from prunelora.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


def test_digits_default_shapes(digits):
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert len(digits.x_test) == 360  # ceil(0.2 * 1797)
    assert digits.x_train.dtype == torch.uint8 and digits.x_test.dtype == torch.uint8
    assert digits.x_train.shape[1:] == (1, 12, 12) and digits.x_test.shape[1:] == (1, 12, 12)
    assert digits.y_train.dtype == torch.int64 and len(digits.y_train) == len(digits.x_train)
    assert digits.num_classes == 10 and digits.classes == [str(i) for i in range(10)]
    assert (digits.in_chans, digits.image_size) == (1, 12)
    assert set(digits.y_train.tolist()) == set(range(10)) == set(digits.y_test.tolist())
    assert int(digits.x_train.max()) == 255


def test_digits_native_size_keeps_pixels(digits):
    from sklearn.datasets import load_digits

    small = load_dataset(DataConfig(name="digits", image_size=8))
    assert small.x_train.shape[1:] == (1, 8, 8)
    images = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    # every train image is one of the original images, scaled 0..16 -> 0..255 and not resampled
    originals = {img.tobytes() for img in images}
    assert all(x.numpy().tobytes() in originals for x in small.x_train[:50])
    torch.testing.assert_close(small.y_train, digits.y_train, rtol=0, atol=0)  # same split at any size


def test_digits_split_is_stratified(digits):
    for c in range(10):
        n_train, n_test = int((digits.y_train == c).sum()), int((digits.y_test == c).sum())
        assert abs(n_test - 0.2 * (n_train + n_test)) <= 1


def test_digits_split_is_fixed(digits):
    again = load_dataset(DataConfig(name="digits"))
    torch.testing.assert_close(again.x_train, digits.x_train, rtol=0, atol=0)
    torch.testing.assert_close(again.y_test, digits.y_test, rtol=0, atol=0)
    other = load_dataset(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(other.y_test, digits.y_test)


def test_normalisation_statistics(digits):
    xf = digits.x_train.float() / 255
    assert digits.mean == pytest.approx((xf.mean().item(),), rel=1e-5)
    assert digits.std == pytest.approx((xf.std().item(),), rel=1e-4)
    z = digits.normalise(digits.x_train)
    assert z.dtype == torch.float32
    assert z.mean().item() == pytest.approx(0.0, abs=1e-4) and z.std().item() == pytest.approx(1.0, abs=1e-3)


def test_make_splits_by_hand():
    y_train = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    y_test = torch.tensor([3, 2, 1, 0, 3])
    s = make_splits(y_train, y_test, [1, 3])
    assert s.forget_classes == [1, 3]
    assert s.forget.tolist() == [1, 3, 5, 7] and s.retain.tolist() == [0, 2, 4, 6]
    assert s.test_forget.tolist() == [0, 2, 4] and s.test_retain.tolist() == [1, 3]


@pytest.mark.parametrize("classes", [[3], [0, 9], [1, 4, 7]])
def test_make_splits_on_digits(digits, classes):
    s = make_splits(digits.y_train, digits.y_test, classes)
    forget, retain = set(s.forget.tolist()), set(s.retain.tolist())
    assert not forget & retain and forget | retain == set(range(len(digits.y_train)))
    t_forget, t_retain = set(s.test_forget.tolist()), set(s.test_retain.tolist())
    assert not t_forget & t_retain and t_forget | t_retain == set(range(len(digits.y_test)))
    assert set(digits.y_train[s.forget].tolist()) == set(classes)
    assert set(digits.y_test[s.test_forget].tolist()) == set(classes)
    assert not set(digits.y_train[s.retain].tolist()) & set(classes)
    assert not set(digits.y_test[s.test_retain].tolist()) & set(classes)
    assert len(s.forget) == sum(int((digits.y_train == c).sum()) for c in classes)


NAMES = ["airplane", "automobile", "bird", "cat", "deer"]


def test_resolve_classes_by_name_and_index():
    assert resolve_classes(["cat"], NAMES) == [3]
    assert resolve_classes(["cat", 0, "bird"], NAMES) == [0, 2, 3]  # sorted
    assert resolve_classes([1, "automobile", 1], NAMES) == [1]  # duplicates collapse
    assert resolve_classes(["4"], NAMES) == [4]  # a number written as text
    digits_names = [str(i) for i in range(10)]
    assert resolve_classes(["3", 5], digits_names) == [3, 5]


@pytest.mark.parametrize("bad", [[10], [-1], ["12"]])
def test_resolve_classes_out_of_range(bad):
    with pytest.raises(UserError, match=r"out of range.*0\.\.9"):
        resolve_classes(bad, [str(i) for i in range(10)])


def test_resolve_classes_unknown_name_lists_classes():
    with pytest.raises(UserError, match="'horse' is not a class.*airplane, automobile, bird, cat, deer"):
        resolve_classes(["horse"], NAMES)


def test_forgetting_every_class_is_an_error():
    with pytest.raises(UserError, match="all 5 classes.*nothing to retain"):
        resolve_classes([0, 1, 2, 3, 4], NAMES)
    with pytest.raises(UserError, match="nothing to retain"):
        resolve_classes(list(range(10)), [str(i) for i in range(10)])


def test_cifar10_without_root():
    with pytest.raises(UserError, match=r"data\.root"):
        load_dataset(DataConfig(name="cifar10"))


def test_cifar10_missing_root(tmp_path):
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*is missing; set data\.root"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path / "nonexistent")))


def test_cifar10_empty_folder_names_the_missing_file(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(UserError, match=r"batches\.meta' is missing"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_unknown_data_set_suggests_close_match():
    with pytest.raises(UserError, match="unknown data set 'digit'. Did you mean 'digits'"):
        load_dataset(DataConfig(name="digit"))


def test_a_request_is_read_once_for_splits_and_for_the_validation_mask(tmp_path):
    """request_rows is the one reading of forget.*: its rows are the splits' forget set, for classes (a sequence's
    together), listed indices and a random fraction alike."""
    import torch

    from prunelora.config import ForgetConfig
    from prunelora.data import request_rows, request_splits

    y_train, y_test = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1]), torch.tensor([0, 1, 2, 2])
    names = ["a", "b", "c"]
    (tmp_path / "ids.txt").write_text("6, 1 3")
    cases = [(ForgetConfig(classes=["c"]), [2], [2, 5, 6]),
             (ForgetConfig(classes=None, sequence=[[1], ["c"]]), [1, 2], [1, 2, 3, 5, 6, 7]),
             (ForgetConfig(classes=None, indices=str(tmp_path / "ids.txt")), None, [1, 3, 6])]
    for forget, classes, rows in cases:
        got_classes, got_rows = request_rows(forget, y_train, names)
        assert got_classes == classes and got_rows.tolist() == rows
        splits = request_splits(forget, y_train, y_test, names)
        assert splits.forget.tolist() == rows
        assert sorted(splits.retain.tolist()) == sorted(set(range(8)) - set(rows))
    drawn = request_rows(ForgetConfig(classes=None, fraction=0.25, seed=3), y_train, names)[1]
    assert len(drawn) == 2 and drawn.tolist() == sorted(drawn.tolist())

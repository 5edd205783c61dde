"""Forget / retain / test splits as index tensors, built from a forget request."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError


@dataclass
class Splits:
    """Indices into the train set (forget, retain) and the test set (test_retain, test_forget)."""

    forget_classes: list[int]
    forget: torch.Tensor  # train samples to forget (D_f)
    retain: torch.Tensor  # train samples to keep (D_r)
    test_retain: torch.Tensor  # test samples of the remaining classes (TA is measured here)
    test_forget: torch.Tensor  # test samples of the forgotten classes


def resolve_classes(requested: list, classes: list[str]) -> list[int]:
    """Class indices from indices or names; out-of-range, unknown and 'all classes' are errors."""
    out = []
    for item in requested:
        if isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit() and item not in classes):
            index = int(item)
            if not 0 <= index < len(classes):
                raise UserError(
                    f"forget class {index} is out of range: this data set has classes 0..{len(classes) - 1}"
                )
        elif item in classes:
            index = classes.index(item)
        else:
            raise UserError(f"forget class '{item}' is not a class of this data set; classes: {', '.join(classes)}")
        if index not in out:
            out.append(index)
    if len(out) >= len(classes):
        raise UserError(
            f"forget.classes names all {len(classes)} classes, which leaves nothing to retain; forget fewer classes"
        )
    return sorted(out)


def make_splits(y_train: torch.Tensor, y_test: torch.Tensor, forget_classes: list[int]) -> Splits:
    """Class-wise forgetting: every train sample of the forgotten classes is in the forget set."""
    fc = torch.tensor(forget_classes, dtype=y_train.dtype)
    in_train, in_test = torch.isin(y_train, fc), torch.isin(y_test, fc)
    return Splits(
        forget_classes=list(forget_classes),
        forget=torch.nonzero(in_train).flatten(),
        retain=torch.nonzero(~in_train).flatten(),
        test_retain=torch.nonzero(~in_test).flatten(),
        test_forget=torch.nonzero(in_test).flatten(),
    )

"""Forget / retain / test splits as index tensors, built from a forget request.

Reading a request (class names, an index file) needs no PyTorch: `resolve.check_request` runs `class_index` and
`parse_indices` before torch is imported; torch is imported by the functions that make tensors.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass
class Splits:
    """Indices into the train set (forget, retain) and the test set (test_retain, test_forget)."""

    forget_classes: list[int]
    forget: torch.Tensor  # train samples to forget (D_f)
    retain: torch.Tensor  # train samples to keep (D_r)
    test_retain: torch.Tensor  # test samples of the remaining classes (TA is measured here; all, sample-wise)
    test_forget: torch.Tensor  # test samples of the forgotten classes


def class_index(item: int | str, classes: list[str]) -> int:
    """The index of a forget class given as an index, a number written as text, or a name."""
    if isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit() and item not in classes):
        index = int(item)
        if not 0 <= index < len(classes):
            raise UserError(f"forget class {index} is out of range: this data set has classes 0..{len(classes) - 1}")
        return index
    if item in classes:
        return classes.index(item)
    raise UserError(f"forget class '{item}' is not a class of this data set; classes: {', '.join(classes)}")


def resolve_classes(requested: list, classes: list[str]) -> list[int]:
    """Class indices from indices or names; out-of-range, unknown and 'all classes' are errors."""
    out = []
    for item in requested:
        index = class_index(item, classes)
        if index not in out:
            out.append(index)
    if len(out) >= len(classes):
        raise UserError(
            f"forget.classes names all {len(classes)} classes, which leaves nothing to retain; forget fewer classes"
        )
    return sorted(out)


def author_indices(requested: list, authors: list[str]) -> list[int]:
    """The indices of the authors a text request names (names or indices); an unknown name is one error with the
    closest names."""
    out = []
    for item in requested:
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
            if not 0 <= index < len(authors):
                raise UserError(f"forget.classes: author {index} is out of range; this data set has authors "
                                f"0..{len(authors) - 1} (data.authors)")
        elif item in authors:
            index = authors.index(item)
        else:
            close = difflib.get_close_matches(str(item), authors, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
                f"; authors are named like {authors[0]!r} (or give indices 0..{len(authors) - 1})"
            raise UserError(f"forget.classes: {item!r} is not an author of this data set{hint}")
        if index in out:
            raise UserError(f"forget.classes names author {authors[index]!r} twice; name each author once")
        out.append(index)
    if len(out) >= len(authors):
        raise UserError(f"forget.classes names all {len(authors)} authors, which leaves nothing to retain")
    return sorted(out)


def make_splits(y_train: torch.Tensor, y_test: torch.Tensor, forget_classes: list[int]) -> Splits:
    """Class-wise forgetting: every train sample of the forgotten classes is in the forget set."""
    import torch

    fc = torch.tensor(forget_classes, dtype=y_train.dtype)
    in_train, in_test = torch.isin(y_train, fc), torch.isin(y_test, fc)
    return Splits(
        forget_classes=list(forget_classes),
        forget=torch.nonzero(in_train).flatten(),
        retain=torch.nonzero(~in_train).flatten(),
        test_retain=torch.nonzero(~in_test).flatten(),
        test_forget=torch.nonzero(in_test).flatten(),
    )


def make_sample_splits(y_train: torch.Tensor, y_test: torch.Tensor, forget: torch.Tensor) -> Splits:
    """Sample-wise forgetting: the given train samples are forgotten, every class stays; TA covers the whole
    test set and there is no forgotten-class test set."""
    import torch

    mask = torch.zeros(len(y_train), dtype=torch.bool)
    mask[forget] = True
    return Splits(
        forget_classes=[],
        forget=torch.nonzero(mask).flatten(),
        retain=torch.nonzero(~mask).flatten(),
        test_retain=torch.arange(len(y_test)),
        test_forget=torch.zeros(0, dtype=torch.long),
    )


def random_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """round(fraction * n) distinct indices of range(n), drawn uniformly with `seed` (at least 1, at most n - 1)."""
    import torch

    k = min(max(round(fraction * n), 1), n - 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def read_indices(path: str | Path, n: int) -> torch.Tensor:
    """Train-set indices from a text file (integers separated by whitespace or commas), a JSON list, or a JSON
    object {"indices": [...]} (the deletion-request file `prunelora verify` takes), as a sorted tensor."""
    import torch

    return torch.tensor(parse_indices(path, n), dtype=torch.long)


def request_rows(forget, y_train: torch.Tensor, class_names: list[str], authors: bool = False
                 ) -> tuple[list[int] | None, torch.Tensor]:
    """The one reading of a deletion request (a ForgetConfig) against a train set: (the forgotten classes, None
    for a request of samples; the train rows it forgets). A sequence's requests count together. With `authors`
    (text), the classes are authors: forget.classes names them, forget.fraction draws that share of them with
    forget.seed, and every row of a forgotten author is forgotten."""
    import torch

    n = len(y_train)
    if authors:
        if forget.fraction is not None:
            classes = random_indices(len(class_names), forget.fraction, forget.seed).tolist()
        else:
            classes = author_indices(forget.classes, class_names)
        return classes, torch.nonzero(torch.isin(y_train.cpu(), torch.tensor(classes, dtype=y_train.dtype))).flatten()
    if forget.fraction is not None:
        return None, random_indices(n, forget.fraction, forget.seed)
    if forget.indices is not None:
        return None, read_indices(forget.indices, n)
    requested = [c for r in forget.sequence for c in r] if forget.sequence is not None else forget.classes
    classes = resolve_classes(requested, class_names)
    return classes, torch.nonzero(torch.isin(y_train.cpu(), torch.tensor(classes, dtype=y_train.dtype))).flatten()


def request_splits(forget, y_train: torch.Tensor, y_test: torch.Tensor, class_names: list[str],
                   authors: bool = False) -> Splits:
    """The splits of a deletion request: whole classes by label (authors on text), or samples (a random fraction,
    listed indices)."""
    classes, rows = request_rows(forget, y_train, class_names, authors)
    if classes is None:
        return make_sample_splits(y_train, y_test, rows)
    return make_splits(y_train, y_test, classes)


def parse_indices(path: str | Path, n: int | None) -> list[int]:
    """The sorted indices of a forget.indices file (see `read_indices`), each in range(n) (None: n not known yet),
    none twice, and not all of them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"forget.indices file '{path}' does not exist; pass a file of train-set indices")
    text = path.read_text(errors="replace").strip()
    try:
        values = json.loads(text) if text.startswith(("[", "{")) else [int(v) for v in re.split(r"[\s,]+", text) if v]
    except ValueError:
        raise UserError(f"forget.indices file '{path}' must hold integers (one per line, or a JSON list)") from None
    if isinstance(values, dict) and list(values) == ["indices"]:
        values = values["indices"]
    if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f"forget.indices file '{path}' must hold at least one integer index")
    bad = [v for v in values if v < 0 or (n is not None and v >= n)]
    if bad:
        where = f"the train set has indices 0..{n - 1}" if n is not None else "indices start at 0"
        raise UserError(f"forget.indices: index {bad[0]} is out of range; {where}")
    unique = sorted(set(values))
    if len(unique) < len(values):
        seen: set[int] = set()
        twice = next(v for v in values if v in seen or seen.add(v))
        raise UserError(f"forget.indices file '{path}' lists index {twice} twice; list each sample once")
    if n is not None and len(unique) >= n:
        raise UserError(f"forget.indices names all {n} train samples, which leaves nothing to retain")
    return unique


def validation_index(y_train: torch.Tensor, eligible: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A stratified, seeded validation split of the train set: from each class, round(fraction * n) of its
    `eligible` samples (at least one, and never all of them), drawn with `seed`. Sorted train-set indices."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    y = y_train.cpu()
    chosen = []
    for c in torch.unique(y[eligible.cpu()]).tolist():
        members = torch.nonzero(eligible.cpu() & (y == c)).flatten()
        k = min(max(round(fraction * len(members)), 1), len(members) - 1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)

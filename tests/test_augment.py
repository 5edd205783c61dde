"""Batched crop and flip: each sample is exactly a shifted window / mirror of its padded original."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunelora.config import DataConfig
from prunelora.data import load_dataset
from prunelora.data.augment import augment, random_crop, random_flip


def _batch(n=64):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_crop_takes_the_drawn_window_of_the_zero_padded_image():
    x = _batch()
    out = random_crop(x, torch.Generator().manual_seed(0), pad=4)
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (len(x),), generator=g), torch.randint(0, 9, (len(x),), generator=g)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert len({(a, b) for a, b in zip(dy.tolist(), dx.tolist())}) > 20  # offsets really vary


def test_flip_mirrors_about_half():
    x = _batch(1000)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, s.flip(2)) and not torch.equal(o, s) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert (flipped | kept).all() and 400 < flipped.sum() < 600


def test_none_is_identity_and_kinds_are_deterministic():
    x = _batch()
    assert augment(x, "none", torch.Generator().manual_seed(0)) is x
    a = augment(x, "crop_flip", torch.Generator().manual_seed(3))
    b = augment(x, "crop_flip", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_data_sets_choose_their_augmentation_and_config_overrides():
    assert load_dataset(DataConfig()).augment == "none"  # digits are not mirrored or shifted
    assert load_dataset(DataConfig(augment="crop")).augment == "crop"


def test_flip_kind_mirrors_without_shifting():
    """`flip` (the authors' ViT recipe): exactly random_flip with the same draws, no crop."""
    x = _batch(1000)
    out = augment(x, "flip", torch.Generator().manual_seed(0))
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))
    mirrored = torch.tensor([torch.equal(o, s.flip(2)) and not torch.equal(o, s) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert (mirrored | kept).all() and 400 < mirrored.sum() < 600
    assert load_dataset(DataConfig(augment="flip")).augment == "flip"

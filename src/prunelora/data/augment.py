"""Batched augmentation on uint8 image tensors, on whatever device the batch lives (no per-sample Python).

`crop`: random crop of the original size from the image padded by `pad` pixels of zeros on each side
(torchvision's RandomCrop(size, padding=4)); `flip`: horizontal flip with probability 1/2; `crop_flip`: both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "flip", "crop_flip")


def random_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(3), x)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation `kind` (none | crop | flip | crop_flip) to a batch (N, C, H, W)."""
    if kind == "none":
        return x
    if kind in ("crop", "crop_flip"):
        x = random_crop(x, generator)
    return random_flip(x, generator) if kind in ("flip", "crop_flip") else x

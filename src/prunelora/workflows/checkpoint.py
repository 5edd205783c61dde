"""A checkpoint's model rebuilt: its config checked before the tensors are read, the architecture made for the
data's shape and shrunk to the channels a removal left, the weights checked and loaded. The API, `verify` and the
CLI read checkpoints through these. PyTorch is imported inside the functions that need it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import config as C
from .resolve import checkpoint_config

if TYPE_CHECKING:
    from torch import nn


def load_model(checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None):
    """(state dict, resolved config) of a checkpoint; overrides may not change model.* or data.*."""
    state, cfg, _ = load_checkpoint(checkpoint, overrides, config_file)
    return state, cfg


def load_module(checkpoint: str | Path) -> nn.Module:
    """The model of a checkpoint as a plain `nn.Module` in eval mode (channels removed or not)."""
    from .experiment import prepare

    state, cfg, extra = load_checkpoint(checkpoint)
    if "num_classes" in extra:
        shape = (extra["num_classes"], extra["in_chans"], extra["image_size"])
    else:  # checkpoints of `prunelora train`/`unlearn` before these facts were stored: read the data set
        shape = data_shape(prepare(cfg)[0])
    return build_model(state, cfg, shape, checkpoint, extra).eval()


def load_checkpoint(checkpoint, overrides: list[str] = (), config_file: str | None = None):
    """(state dict, resolved config, extra facts): the config checked before the tensors are read."""
    from ..store.checkpoints import read_checkpoint

    cfg, _ = checkpoint_config(checkpoint, overrides, config_file)
    state, _, extra = read_checkpoint(checkpoint)
    return state, cfg, extra


def build_model(state: dict, cfg: C.ExperimentConfig, shape: tuple[int, int, int], checkpoint, extra: dict) -> nn.Module:
    """The model of `cfg` for (classes, channels, image size), shrunk to the checkpoint's removed channels."""
    from ..models import create_model
    from ..models.pruning import match_shapes
    from ..store.checkpoints import load_weights

    model = create_model(cfg.model, *shape)
    if extra.get("channels_removed"):
        match_shapes(model, state)
    return load_weights(model, state, checkpoint)


def data_shape(data) -> tuple[int, int, int]:
    """(classes, channels, image size) of a data set: what a model is built for."""
    return data.num_classes, data.in_chans, data.image_size

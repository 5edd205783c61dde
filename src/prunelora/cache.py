"""On-disk cache of the expensive models, the original and retrain, keyed by a hash of everything that
determines them: data and split, model, training recipe, seed, the samples trained on, the version of
the training code, and how training ran (device type, bf16 autocast, memory format, torch.compile, number of
processes, CPU threads), since each of these changes the numbers a seed produces and the time it takes. The
hash is stored in the file and checked on load; a mismatch retrains.

The directory is $PRUNELORA_CACHE (default ~/.cache/prunelora; "off" disables it); `cache=false` in the config
skips it for one run. A hit also restores the time and memory the training took when it was cached, so that
ratios to retrain stay meaningful.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from . import dist
from .config import to_dict
from .files import atomic_write

# bump when the training loop, a model or a recipe changes what a seed produces
TRAINING_CODE_VERSION = 1


def cache_dir() -> Path | None:
    value = os.environ.get("PRUNELORA_CACHE", "~/.cache/prunelora")
    return None if value.lower() in ("off", "0", "false", "") else Path(value).expanduser()


def execution(ctx) -> dict:
    """How training runs, as far as it changes the result or its recorded cost."""
    run = {"device": ctx.device.type, "amp": ctx.amp, "channels_last": ctx.channels_last, "compile": ctx.compile,
           "processes": dist.world().size}
    if ctx.device.type == "cpu":  # reductions split across threads add in another order
        run["threads"] = torch.get_num_threads()
    else:  # graphs matched eager steps to the last digit where measured, but nothing promises them bit for bit
        run["cuda_graphs"] = ctx.graphs
    return run


def model_key(role: str, cfg, seed: int, index: torch.Tensor, ctx) -> tuple[str, str]:
    """(sha256 hex, description): what determines a model trained in `role` on train samples `index` (rows of the
    data set's own train set: `ImageData.source_rows`) with `ctx`."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k != "download"}
    described = json.dumps({
        "role": role, "code": TRAINING_CODE_VERSION, "torch": torch.__version__.split("+")[0],
        "data": data, "model": to_dict(cfg.model), "train": to_dict(cfg.train), "seed": seed,
        "samples": hashlib.sha256(index.cpu().numpy().astype("int64").tobytes()).hexdigest(),
        "execution": execution(ctx),
    }, sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest(), described


def _path(role: str, key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / f"{role}-{key[:20]}.safetensors"


def load(role: str, key: str, model: nn.Module) -> dict | None:
    """Load the cached weights into `model` and return the cost record, or None (miss, or a file whose
    stored hash does not match, which is then retrained and overwritten)."""
    path = _path(role, key)
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError):
        return None
    return {**json.loads(meta.get("record", "{}")), "cached": True}


def store(role: str, key: str, described: str, model: nn.Module, record: dict) -> None:
    """Write atomically (rank 0 only); a cache that cannot be written is skipped."""
    path = _path(role, key)
    if path is None or not dist.world().main:  # the state's copy to the CPU only where it is written
        return
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    keep = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
    meta = {"key": key, "described": described, "record": json.dumps(keep)}
    try:
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    except OSError:
        pass

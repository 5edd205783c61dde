"""On-disk cache of the expensive models, the original and retrain, keyed by a hash of everything that
determines them: data and split, model, training recipe, seed, the samples trained on, the version of
the training code, and how training ran (device type, bf16 autocast, memory format, torch.compile, number of
processes, CPU threads), since each of these changes the numbers a seed produces and the time it takes. The data
enter by their settings and by the SHA-256 of their tensors (`ImageData.digest`): an image replaced under the same
file name retrains. The hash is stored in the file and checked on load, a mismatch retrains; so is the SHA-256 of
the tensors (`checkpoints.tensors_digest`), and an entry damaged on disk is said on stderr and trained again.

Two processes that miss one entry do not both train it: the first holds `<entry>.lock` from its miss until it
stores the entry (`lock.EntryLock`), the second waits (saying so) and loads what the first stored. Under torchrun
the ranks must agree on a hit, so there nobody waits.

The directory is $PRUNELORA_CACHE (default ~/.cache/prunelora; "off" disables it); `cache=false` in the config
skips it for one run. A hit also restores the time and memory the training took when it was cached, so that
ratios to retrain stay meaningful.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from ..config import to_dict
from ..world import world
from .checkpoints import plain_state, tensors_digest
from .files import atomic_write, cache_dir
from .lock import EntryLock, wait_for

# bump when the training loop, a model or a recipe changes what a seed produces (2: fused Adam / AdamW on the
# CPU, whose weights differ from the per-tensor loop's in the last digits)
TRAINING_CODE_VERSION = 2

__all__ = ["cache_dir", "execution", "load", "model_key", "store"]
_HELD: dict[Path, EntryLock] = {}  # entries this process missed and is training, until stored


def execution(ctx) -> dict:
    """How training runs, as far as it changes the result or its recorded cost."""
    run = {"device": ctx.device.type, "amp": ctx.amp, "channels_last": ctx.channels_last, "compile": ctx.compile,
           "processes": world().size}
    if ctx.device.type == "cpu":  # reductions split across threads add in another order
        run["threads"] = torch.get_num_threads()
        run["small_map_convs"] = ctx.small_maps
    else:  # graphs matched eager steps to the last digit where measured, but nothing promises them bit for bit
        run["cuda_graphs"] = ctx.graphs
    return run


def model_key(role: str, cfg, seed: int, index: torch.Tensor, ctx, data) -> tuple[str, str]:
    """(sha256 hex, description): what determines a model trained in `role` on train samples `index` (rows of the
    data set's own train set: `ImageData.source_rows`) of `data` (an `ImageData`) with `ctx`."""
    settings = {k: v for k, v in to_dict(cfg.data).items() if k != "download"}
    described = json.dumps({
        "role": role, "code": TRAINING_CODE_VERSION, "torch": torch.__version__.split("+")[0],
        "data": settings, "data_sha256": data.digest(), "model": to_dict(cfg.model), "train": to_dict(cfg.train),
        "seed": seed,
        "samples": hashlib.sha256(index.cpu().numpy().astype("int64").tobytes()).hexdigest(),
        "execution": execution(ctx),
    }, sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest(), described


def _path(role: str, key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / f"{role}-{key[:20]}.safetensors"


def load(role: str, key: str, model: nn.Module) -> dict | None:
    """Load the cached weights into `model` and return the cost record, or None: a miss, a file whose stored hash
    does not match, or a damaged one (said on stderr), which the caller trains and `store`s. Another process
    training the same entry is waited for, and what it stored loaded."""
    for held in list(_HELD):  # one entry at a time: one missed before is stored, or its training failed
        _HELD.pop(held).release()
    path = _path(role, key)
    if path is None:
        return None
    record = _read(path, key, model, say=True)
    if record is None and not world().active:
        with contextlib.suppress(OSError):  # the lock lives beside the entry; no folder: no lock, as before
            path.parent.mkdir(parents=True, exist_ok=True)
        lock = EntryLock(path.with_suffix(".lock"))
        wait_for(lock, f"model-cache entry '{path}'")
        record = _read(path, key, model, say=False)  # what the process waited for stored
        if record is None:
            _HELD[path] = lock
        else:
            lock.release()
    return record


def _read(path: Path, key: str, model: nn.Module, say: bool) -> dict | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
        if meta.get("digest") != tensors_digest(state):
            if say:
                print(f"prunelora: model-cache entry '{path}' is damaged (its tensors do not match their SHA-256); "
                      "training it again", file=sys.stderr, flush=True)
            return None
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError):
        return None
    return {**json.loads(meta.get("record", "{}")), "cached": True}


def store(role: str, key: str, described: str, model: nn.Module, record: dict, data=None) -> None:
    """Write atomically (rank 0 only), with the tensors' SHA-256; a cache that cannot be written is skipped. Ends
    this process's lock on the entry: a process waiting for it loads it now. A text model's entry keeps the
    tokenizer it reads (`data.tokenizer_json`, metadata "tokenizer.json"); the key already names it by the data's
    digest."""
    path = _path(role, key)
    if path is None or not world().main:  # the state's copy to the CPU only where it is written
        return
    state = plain_state(model)
    keep = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
    meta = {"key": key, "described": described, "record": json.dumps(keep), "digest": tensors_digest(state)}
    if getattr(data, "tokenizer_json", None) is not None:
        meta["tokenizer.json"] = data.tokenizer_json
    try:
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    except OSError:
        pass
    finally:
        if path in _HELD:
            _HELD.pop(path).release()

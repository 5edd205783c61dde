"""Model files: prunelora's checkpoints (safetensors with the resolved config inside, never pickle) and a user's
weights (`model.init`: safetensors, or a state dict read with `weights_only=True`). A checkpoint's config is read
from its header without importing PyTorch (`read_config`), so that the command line checks it at once.

Every checkpoint (and model-cache entry) carries `tensors_digest` of its tensors in its metadata ("digest"), checked
when its tensors are read: a file damaged on disk (bytes flipped, weights zeroed) is refused, not trained on.
Checkpoints written before the digest existed (prunelora 0.x, no "digest" key) load with a one-line warning: their
tensors cannot be checked. Weights that are not finite (NaN, inf) are the input's fault and refused, naming the
tensor, before anything trains on them."""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .files import atomic_write

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "prunelora-checkpoint-1"
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU, each tensor its own contiguous storage: safetensors refuses tensors that
    share memory, as a Llama's tied input and output embeddings do (the copy is loaded into both, which stay tied)."""
    state, seen = {}, set()
    for key, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        pointer = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        state[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return state


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, extra: dict | None = None) -> None:
    """Model weights as safetensors, the resolved config in its metadata and as YAML beside it."""
    import yaml
    from safetensors.torch import save_file

    from ..world import world

    if not world().main:  # the state's copy to the CPU only where it is written
        return
    path = Path(path)
    state = plain_state(model)
    meta = {"format": FORMAT, "config": json.dumps(config), "extra": json.dumps(extra or {}),
            "digest": tensors_digest(state)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    atomic_write(path.with_suffix(".yaml"), yaml.safe_dump(config, sort_keys=False))


def read_config(path: str | Path) -> tuple[dict, dict]:
    """(config dict, extra dict) of a prunelora checkpoint, from its header alone (no PyTorch, no tensors read);
    a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"checkpoint '{path}' {problem}; pass the .safetensors file written by prunelora train")
    unreadable = f"checkpoint '{path}' is not a readable safetensors file"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = json.loads(f.read(size)) if 0 < size <= MAX_HEADER else None
    except OSError as err:
        raise UserError(f"{unreadable} ({err.strerror}); pass a file written by prunelora") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"{unreadable} (no valid header); pass a file written by prunelora")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"checkpoint '{path}' was not written by prunelora (no config inside); pass a file written by "
                        "prunelora train or unlearn")
    try:
        config, extra = json.loads(meta.get("config", "")), json.loads(meta.get("extra", "{}"))
    except (json.JSONDecodeError, TypeError):
        config = extra = None
    if not isinstance(config, dict) or not isinstance(extra, dict):
        raise UserError(f"checkpoint '{path}' holds a damaged config (its metadata is not a JSON mapping); write it "
                        "again with prunelora train, unlearn or export")
    return config, extra


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(state dict, config dict, extra dict) of a prunelora checkpoint; a bad file is a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, extra = read_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"checkpoint '{path}' is not a readable safetensors file ({err}); pass a file written by prunelora") from None
    stored = _metadata(path).get("digest")
    if stored is None:
        print(f"prunelora: warning: checkpoint '{path}' has no digest (written before prunelora checked them), so a "
              "damaged file cannot be told apart; write it again with prunelora train, unlearn or export",
              file=sys.stderr, flush=True)
    elif stored != tensors_digest(state):
        raise UserError(f"checkpoint '{path}' is damaged: its tensors do not match the SHA-256 stored with them; use "
                        "an intact copy, or write it again with prunelora train, unlearn or export")
    check_finite(state, path)
    return state, config, extra


def _metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over every tensor in name order: its name, dtype, shape and bytes (CPU, contiguous)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor: training from them can only
    diverge, and the fault is the file's, not the learning rate's."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise UserError(f"'{path}' holds non-finite weights: tensor '{name}' has {bad} NaN or infinite "
                                f"value{'s' if bad > 1 else ''} of {tensor.numel()}; pass a model with finite weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a user's file: safetensors, or a PyTorch state dict read with weights_only=True (never
    unpickling code). A {"state_dict": ...} or {"model": ...} wrapper is unwrapped."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.init file '{path}' does not exist; pass a .safetensors or state-dict .pt file")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"'{path}' is not a readable safetensors file ({err})") from None
        check_finite(state, path)
        return state
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  torch.load raises many types for foreign or unsafe files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"'{path}' is not a plain state dict that loads with weights_only=True ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"'{path}' does not hold a state dict (a mapping of parameter names to tensors)")
    check_finite(state, path)
    return state


def load_weights(model: nn.Module, state: dict, path: str | Path) -> nn.Module:
    """Load a state dict strictly; a mismatch names the first differing keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}" for label, keys in
            (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise UserError(f"checkpoint '{path}' does not match the model it describes ({detail}); was it edited or written by another version?")
    model.load_state_dict(state)
    return model

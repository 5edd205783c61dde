"""Writing files: atomically (a temporary file beside the target, then a rename), and as strict JSON.

Every file prunelora writes (results, progress, checkpoints, the model cache) goes through `atomic_write`, so that
a reader never sees a half-written file, and with several processes only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import dist


def atomic_write(path: str | Path, data: str | bytes | Callable[[str], None]) -> None:
    """Write `data` (text, bytes, or a function that writes the file at the path it is given) to a temporary
    file beside `path`, then rename it to `path`. On any error the temporary file is removed and the error
    raised. With several processes only rank 0 writes."""
    if not dist.world().main:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(value):
    """NaN (e.g. accuracy on an empty set) -> None, recursively, so that JSON stays strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value

"""Writing files: atomically (a temporary file beside the target, then a rename), with the user's umask, as strict
JSON, and only where writing can succeed and overwrites no input.

Every file prunelora writes (results, progress, checkpoints, the model cache) goes through `atomic_write`, so that
a reader never sees a half-written file, and with several processes only rank 0 writes. The checks below run before
any work starts: an output that cannot be written, or that would replace what the command reads, is a UserError.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError


def atomic_write(path: str | Path, data: str | bytes | Callable[[str], None]) -> None:
    """Write `data` (text, bytes, or a function that writes the file at the path it is given) to a temporary
    file beside `path`, then rename it to `path`, readable as the umask allows (0644 under umask 022). On any error
    the temporary file is removed and the error raised. With several processes only rank 0 writes."""
    from ..world import world

    if not world().main:
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
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; a file written in place would follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's umask (read from /proc where it can be, which leaves it untouched for other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NULL_REASONS = {"nan": "not a number: undefined here (e.g. an accuracy over no samples)",
                "inf": "infinite", "-inf": "minus infinite"}


def finite(value):
    """NaN and infinities -> None, recursively, so that JSON stays strict. A dict that held one also gets a "nulls"
    entry naming each such key and why it is null (e.g. {"forget_TA": "not a number: ..."})."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out = {k: finite(v) for k, v in value.items()}
        nulls = {k: NULL_REASONS[str(v)] for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)}
        if nulls:
            out["nulls"] = {**(out.get("nulls") or {}), **nulls}
        return out
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(value, indent: int | None = 2) -> str:
    """Strict JSON of `value`, NaN and infinities written as null with their reason (`finite`)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


# ---------------------------------------------------------------- checks before any work


def check_out_dir(out: str | Path, flag: str = "--out") -> None:
    """`out`, a directory to write in (created if missing), can be written: no file in its place or above it, no
    name longer than the file system takes, a folder this process may write in."""
    out = Path(out)
    _check_path(out, flag, out, want_dir=True)


def check_out_file(path: str | Path, flag: str = "--out") -> None:
    """`path`, a file to write (its folder created if missing), can be written."""
    path = Path(path)
    _check_path(path.parent, flag, path, want_dir=False)
    _check_name(path.name, path.parent, flag, path)
    if os.path.isdir(path):
        raise UserError(f"{flag} '{path}' is a directory; pass a file name")


def _check_path(folder: Path, flag: str, shown: Path, want_dir: bool) -> None:
    """Walk `folder` from its root: every name short enough, every existing part a directory, and the deepest
    existing one writable (probed with a temporary file that leaves no trace)."""
    absolute = Path(os.path.abspath(folder))
    if len(os.fsencode(str(absolute))) >= 4096:
        raise UserError(f"{flag} '{_short(shown)}' is longer than paths may be; pass a shorter path")
    node, parts = Path(absolute.anchor), absolute.parts[1:]
    for i, part in enumerate(parts):
        _check_name(part, node, flag, shown)
        child = node / part
        try:
            mode = os.stat(child).st_mode
        except FileNotFoundError:
            for rest in parts[i + 1:]:
                _check_name(rest, node, flag, shown)
            return _check_writable(node, flag, shown)
        except OSError as err:
            raise UserError(f"{flag} '{shown}' cannot be reached ({err.strerror}: '{child}'); pass another path") from None
        if not stat.S_ISDIR(mode):
            what = "is a file; pass a directory (it is created if missing)" if child == absolute and want_dir \
                else f"cannot be created: '{child}' is a file; pass another path"
            raise UserError(f"{flag} '{shown}' {what}")
        node = child
    _check_writable(node, flag, shown)


def _check_name(name: str, parent: Path, flag: str, shown: Path) -> None:
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX") if parent.exists() else 255
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(name)) > limit:
        raise UserError(f"{flag} '{_short(shown)}' has a name of {len(os.fsencode(name))} bytes; this file system "
                        f"takes at most {limit}; pass a shorter name")


def _check_writable(folder: Path, flag: str, shown: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        where = "" if folder == Path(os.path.abspath(shown)) else f": '{folder}'"
        raise UserError(f"{flag} '{shown}' cannot be written{where} ({err.strerror}); pass a folder you can "
                        "write to") from None


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-20:]}"


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file or folder (through links and `..`), existing or not."""
    return os.path.realpath(a) == os.path.realpath(b)


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies in `folder` or below it."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs(out: str | Path, files: tuple[str, ...] | list[str] = (), folders: tuple[str, ...] | list[str] = (),
                  flag: str = "--out") -> None:
    """Each of `files` (names in `out`) is a file or absent, each of `folders` a folder or absent: what a command
    writes there at the end must not fail only after the work (a folder where results.json goes, a file named
    progress)."""
    out = Path(out)
    for name in files:
        if (out / name).is_dir():
            raise UserError(f"{flag} '{out}' holds a folder '{name}' where this command writes a file; remove or "
                            f"rename '{out / name}', or pass another {flag}")
    for name in folders:
        if os.path.lexists(out / name) and not (out / name).is_dir():
            raise UserError(f"{flag} '{out}' holds a file '{name}' where this command writes a folder; remove or "
                            f"rename '{out / name}', or pass another {flag}")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the model cache's folder (no PyTorch needed)

CACHE_OFF = ("off", "0", "false", "")


def cache_dir() -> Path | None:
    """$PRUNELORA_CACHE (default ~/.cache/prunelora), or None when it says off."""
    value = os.environ.get("PRUNELORA_CACHE", "~/.cache/prunelora")
    return None if value.lower() in CACHE_OFF else Path(value).expanduser()


def check_cache_dir() -> None:
    """PRUNELORA_CACHE names a folder, or a path where one can be made: a regular file there (or above it) would
    silently mean no cache, every model trained again."""
    root = cache_dir()
    if root is None:
        return
    for node in (root, *root.parents):
        if os.path.exists(node) and not node.is_dir():
            what = "a file" if node == root else f"a path under the file '{node}'"
            raise UserError(f"PRUNELORA_CACHE='{os.environ.get('PRUNELORA_CACHE')}' names {what}, not a folder for "
                            "the model cache; point it at a folder (created if missing), or set PRUNELORA_CACHE=off")
        if os.path.exists(node):
            return

"""Resumable runs: each method's result (its report entry and its outputs, which the comparisons with retrain
need) is written atomically under OUT/progress/ as soon as it is done. A run started again with the same
--out and the same config loads those and runs only the rest; a different config there, or another set-up
(device, threads, processes: the times would not compare), is refused unless --force, which starts the run
over: what an earlier run wrote there (results, reports, plots, progress/, models/) is removed first."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from . import dist
from .errors import UserError
from .files import atomic_write, to_json


class Progress:
    def __init__(self, out: str | Path, config: dict, force: bool = False, setup: dict | None = None):
        self.dir = Path(out) / "progress"
        self.config, self.config_path, self.started = config, Path(out) / "config.yaml", False
        self.setup = setup or {}  # where the run is timed: results from another set-up do not mix with these
        if force:  # start over: nothing an earlier run wrote here stays
            if dist.world().main:
                clear_run(Path(out))
            return
        saved = self.config_path
        if saved.is_file():
            try:
                before = yaml.safe_load(saved.read_text())
            except yaml.YAMLError:
                before = None
            if before != config:
                where = first_difference(before, config) if isinstance(before, dict) else "config.yaml"
                raise UserError(f"--out '{out}' holds a run with another config ({where} differs); use another --out, "
                                "or --force to start it over")
        try:
            before = json.loads((self.dir / "setup.json").read_text())
        except (OSError, json.JSONDecodeError):
            return  # nothing finished yet, or a run from before set-ups were recorded
        if before != self.setup:
            key = first_difference(before, self.setup) if isinstance(before, dict) else "setup.json"
            was = before.get(key) if isinstance(before, dict) else "unreadable"
            raise UserError(f"--out '{out}' holds a run started on another set-up ({key} was {was}, now "
                            f"{self.setup.get(key)}); its times and memory would mix with this one's. Resume it there, "
                            "use another --out, or --force to start it over")

    def _path(self, seed: int, name: str, suffix: str) -> Path:
        return self.dir / f"seed{seed}-{name}{suffix}"

    def load(self, seed: int, name: str) -> tuple[dict, tuple | None] | None:
        """(entry, (train logits, test logits) or None) of a finished method, or None."""
        entry_path, outputs_path = self._path(seed, name, ".json"), self._path(seed, name, ".npz")
        if not entry_path.is_file():
            return None
        try:
            entry = json.loads(entry_path.read_text())
            outputs = None
            if outputs_path.is_file():
                with np.load(outputs_path, allow_pickle=False) as f:
                    outputs = (f["train"], f["test"])
        except (json.JSONDecodeError, OSError, ValueError, KeyError):
            return None  # a damaged file: that method runs again
        return entry, outputs

    def save(self, seed: int, name: str, entry: dict, outputs: tuple | None) -> None:
        """Outputs first, entry last: an entry on disk means everything it needs is there. The config is
        written with the first result (a run that fails before any result leaves nothing behind)."""
        if not self.started:
            atomic_write(self.config_path, yaml.safe_dump(self.config, sort_keys=False))
            atomic_write(self.dir / "setup.json", json.dumps(self.setup, sort_keys=True))
            self.started = True
        if outputs is not None:
            buf = io.BytesIO()
            np.savez(buf, train=outputs[0], test=outputs[1])
            atomic_write(self._path(seed, name, ".npz"), buf.getvalue())
        atomic_write(self._path(seed, name, ".json"), to_json(entry, indent=None))


def clear_run(out: Path) -> None:
    """Remove what a run wrote in `out`: its files (`report.write.RUN_FILES`), progress/ and models/, and the
    temporary files of writes that were interrupted. Anything else there stays."""
    from .report.write import RUN_FILES, RUN_FOLDERS

    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in RUN_FOLDERS:
        shutil.rmtree(out / folder, ignore_errors=True)
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def first_difference(a: dict, b: dict, prefix: str = "") -> str:
    """The dotted key of the first setting that differs between two config dicts."""
    for key in list(dict.fromkeys([*a, *b])):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                return first_difference(a[key], b[key], f"{prefix}{key}.")
            return f"{prefix}{key}"
    return prefix.rstrip(".") or "config"

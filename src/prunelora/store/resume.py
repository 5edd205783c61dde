"""Resumable runs: each method's result (its report entry and its outputs, which the comparisons with retrain
need) is written atomically under OUT/progress/ as soon as it is done. A run started again with the same
--out and the same config loads those and runs only the rest; a different config there, or another set-up
(device, threads, processes: the times would not compare), is refused unless --force, which starts the run
over: what an earlier run wrote there (results, reports, plots, progress/, models/) is removed first.

A run is its config and the content of what it reads: the SHA-256 of each input file (forget.indices, model.init)
and of the loaded data set's tensors (`run_inputs`, kept in progress/inputs.json) are compared like the config, so
a file changed under the same path is refused too. A progress entry that cannot be read back whole (damaged, empty,
missing keys) counts as not done: that method runs again, and a line says so."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError
from .files import atomic_write, sha256_file, to_json


class Progress:
    def __init__(self, out: str | Path, config: dict, force: bool = False, setup: dict | None = None,
                 inputs: dict | None = None, log=print, keys: tuple[str, ...] = ("UA", "MIA", "RA", "TA", "time_s")):
        from ..world import world

        self.dir = Path(out) / "progress"
        self.config, self.config_path, self.started = config, Path(out) / "config.yaml", False
        self.setup = setup or {}  # where the run is timed: results from another set-up do not mix with these
        self.inputs, self.log = inputs or {}, log  # {what: {"path": ..., "sha256": ...}} (`run_inputs`)
        self.keys = keys  # the metrics a finished entry holds (its modality's)
        if force:  # start over: nothing an earlier run wrote here stays
            if world().main:
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
        self._check_inputs(out)
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

    def _check_inputs(self, out) -> None:
        """The files and data this run reads hold what they held when it started (refused like a config change)."""
        path = self.dir / "inputs.json"
        try:
            before = json.loads(path.read_text())
        except OSError:
            return  # nothing finished yet, or a run from before inputs were recorded
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = None
        if not inputs_readable(before):  # damaged, not changed: what it recorded is unknown, so record it again
            self.log(f"--out '{out}': progress/inputs.json is damaged; rebuilding it from this run's inputs")
            atomic_write(path, json.dumps(self.inputs, sort_keys=True))
            return
        for what, now in self.inputs.items():
            if before.get(what) != now:
                name = f"data set ({now.get('path') or 'built in'})" if what == "data" else f"{what} file '{now['path']}'"
                raise UserError(f"--out '{out}' holds a run whose {name} held other content (its SHA-256 changed "
                                "since); use another --out, or --force to start it over")

    @staticmethod
    def names(seeds: list[int], methods: list[str], steps: int = 0) -> list[str]:
        """Every file a run of these seeds and methods (and `steps` requests of a sequence) may write in progress/
        (for `files.check_outputs`)."""
        stems = [f"seed{s}-{m}" for s in seeds for m in methods] if not steps else \
            [f"seed{s}-request{k}-{m}" for s in seeds for k in range(1, steps + 1) for m in methods]
        return ["setup.json", "inputs.json", *(stem + ext for stem in stems for ext in (".json", ".npz", ".safetensors"))]

    def path(self, seed: int, name: str, suffix: str, step: int | None = None) -> Path:
        """progress/seed<S>-<method><suffix>; in a sequence, seed<S>-request<K>-<method><suffix>."""
        return self.dir / f"seed{seed}-{f'request{step}-' if step else ''}{name}{suffix}"

    def load(self, seed: int, name: str, step: int | None = None) -> tuple[dict, tuple | None] | None:
        """(entry, (train logits, test logits) or None) of a finished method (at request `step` of a sequence), or
        None: not done, or not readable whole (damaged, empty, missing keys, wrong types; said in one line), which
        runs it again."""
        entry_path, outputs_path = self.path(seed, name, ".json", step), self.path(seed, name, ".npz", step)
        if not entry_path.is_file():
            return None
        try:
            entry = json.loads(entry_path.read_text())
            outputs = None
            if outputs_path.is_file():
                with np.load(outputs_path, allow_pickle=False) as f:
                    outputs = (f["train"], f["test"])
            problem = entry_problem(entry, seed, name, outputs, self.keys)
        except (json.JSONDecodeError, OSError, ValueError, KeyError, UnicodeDecodeError) as err:
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
        if problem:
            self.log(f"seed {seed} {name:>15}: progress entry '{entry_path}' is unreadable ({problem}); running it again")
            return None
        return entry, outputs

    def save(self, seed: int, name: str, entry: dict, outputs: tuple | None, step: int | None = None,
             model: bytes | None = None) -> None:
        """Outputs first, entry last: an entry on disk means everything it needs is there. The config is
        written with the first result (a run that fails before any result leaves nothing behind). In a sequence,
        `model` (the safetensors bytes of the method's model at this request, where the next request starts) is
        written before the entry too."""
        if not self.started:
            atomic_write(self.config_path, yaml.safe_dump(self.config, sort_keys=False))
            atomic_write(self.dir / "setup.json", json.dumps(self.setup, sort_keys=True))
            atomic_write(self.dir / "inputs.json", json.dumps(self.inputs, sort_keys=True))
            self.started = True
        if outputs is not None:
            buf = io.BytesIO()
            np.savez(buf, train=outputs[0], test=outputs[1])
            atomic_write(self.path(seed, name, ".npz", step), buf.getvalue())
        if model is not None:
            atomic_write(self.path(seed, name, ".safetensors", step), model)
        atomic_write(self.path(seed, name, ".json", step), to_json(entry, indent=None))


def inputs_readable(before) -> bool:
    """Whether progress/inputs.json holds what `run_inputs` writes: {what: {"path", "sha256"}}, the data included."""
    return (isinstance(before, dict) and isinstance(before.get("data"), dict)
            and all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in before.values()))


def entry_problem(entry, seed: int, name: str, outputs,
                  keys: tuple[str, ...] = ("UA", "MIA", "RA", "TA", "time_s")) -> str | None:
    """What makes a progress entry unusable, or None: it must be this method's and seed's, with its metrics and
    info (or the error it failed with), and a finished method's outputs (train and test logits, 2-D)."""
    if not isinstance(entry, dict):
        return f"not a JSON object but {type(entry).__name__}"
    if entry.get("method") != name or entry.get("seed") != seed:
        return f"it is not the entry of method {name} at seed {seed}"
    if not isinstance(entry.get("metrics"), dict) or not isinstance(entry.get("info"), dict):
        return "no metrics or info"
    if "error" in entry:
        return None if isinstance(entry["error"], str) else "its error is not text"
    metrics = entry["metrics"]
    for key in keys:
        value = metrics.get(key, "missing")
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            return f"metric {key} missing or not a number"
    if outputs is None or any(np.ndim(o) != 2 for o in outputs):
        return "its outputs (.npz beside it) are missing or damaged"
    return None


def run_inputs(cfg, data) -> dict:
    """{what: {"path", "sha256"}} of what a run reads besides its config: the forget.indices and model.init files,
    and the data set as loaded (`ImageData.digest`: an image replaced under the same name changes it)."""
    inputs = {what: {"path": str(path), "sha256": sha256_file(path)}
              for what, path in (("forget.indices", cfg.forget.indices), ("model.init", cfg.model.init)) if path}
    inputs["data"] = {"path": cfg.data.root, "sha256": data.digest()}
    return inputs


# what a run writes in its --out (report.write writes the files): what --force removes, what is checked writable
RUN_FILES = ("config.yaml", "results.md", "results.json", "report.md", "report.csv", "report.tex", "bars.png",
             "curves.png", "tofu.png", "tokenizer.json")
RUN_FOLDERS = ("progress", "models")


def clear_run(out: Path) -> None:
    """Remove what a run wrote in `out`: its files (RUN_FILES), progress/ and models/, and the temporary files of
    writes that were interrupted. Anything else there stays."""
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

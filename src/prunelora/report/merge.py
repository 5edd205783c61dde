"""Merging runs: several `prunelora run` directories of the same request (e.g. seeds run on different machines)
read into one results dict, with a note when their times come from different set-ups."""

from __future__ import annotations

import json
from pathlib import Path

from ..environment import setup_of
from ..errors import UserError

# what must match for runs to be merged: the same data, model, original recipe and request
SAME = ("data", "model", "train", "forget")


def load_runs(dirs: list[str | Path]) -> dict:
    """One results dict from several run directories (runs concatenated; config and environment of the first)."""
    merged = None
    seen = {}
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise UserError(f"'{d}' holds no results.json; pass directories written by prunelora run")
        try:
            results = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"'{path}' is not valid JSON; was the run interrupted while writing it?") from None
        check_results(results, path)
        if merged is None:
            merged = {**results, "runs": [], "sources": []}
        for key in SAME:
            if results["config"].get(key) != merged["config"].get(key):
                raise UserError(f"'{d}' has other {key} settings than '{dirs[0]}'; only runs of the same request merge")
        for r in results["runs"]:
            ident = (r["method"], r["seed"], r.get("step"))
            if ident in seen:
                raise UserError(f"{r['method']} seed {r['seed']} is in both '{seen[ident]}' and '{d}'; drop one directory")
            seen[ident] = d
            merged["runs"].append(r)
        merged["sources"].append(str(d))
        merged.setdefault("setups", {}).setdefault(_setup(results.get("environment", {})), []).append(str(d))
    return merged


def check_results(results, path: Path) -> None:
    """A UserError unless `results` has the shape prunelora run writes: a config, and runs that each name their
    method and seed and hold their metrics (or an error)."""
    fix = "pass a results.json written by prunelora run"
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict) \
            or not isinstance(results.get("runs"), list):
        raise UserError(f"'{path}' is not a prunelora results file (it needs 'config' and 'runs'); {fix}")
    for key in SAME:
        if not isinstance(results["config"].get(key), dict):
            raise UserError(f"'{path}' has no '{key}' settings in its config; {fix}")
    if not isinstance(results.get("environment", {}), dict):
        raise UserError(f"'{path}' has a damaged environment record; {fix}")
    for i, r in enumerate(results["runs"]):
        ok = isinstance(r, dict) and isinstance(r.get("method"), str) and isinstance(r.get("seed"), int) \
            and not isinstance(r.get("seed"), bool) and isinstance(r.get("metrics"), dict) \
            and isinstance(r.get("info", {}), dict)
        if not ok:
            raise UserError(f"'{path}': run {i} lacks its method, seed or metrics; {fix}")


def _setup(env: dict) -> str:
    """Where a run's times and memory come from: device, its name, threads and processes."""
    s = setup_of(env)
    return f"{s['device']} ({s['device_name']}), {s['threads']} threads, {s['processes']} process(es)"


def setups_note(results: dict) -> str | None:
    """A warning when merged runs were timed on different set-ups (their quality metrics still merge)."""
    setups = results.get("setups", {})
    if len(setups) < 2:
        return None
    listed = "; ".join(f"{setup}: {', '.join(dirs)}" for setup, dirs in setups.items())
    return (f"The runs come from {len(setups)} different set-ups ({listed}). Time and memory columns mix them; "
            "compare those only within one set-up.")

"""Merging runs: several `prunelora run` directories of the same request (e.g. seeds run on different machines)
read into one results dict, with a note when their times come from different set-ups. Every file is read and
checked (the shape prunelora run writes, every number a table reads) before any is merged, and without PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import merge
from ..errors import UserError
from ..methods.catalog import METHODS
from ..metrics.catalog import METRICS as DECLARED
from ..metrics.catalog import keys
from ..store.resume import first_difference

# what must match for runs to be merged: the same data, model, original recipe and request
SAME = ("data", "model", "train", "forget")
# eval settings that add columns without changing any other number: runs that differ only in them still merge
EVAL_COLUMNS = ("evidence", "curves", "batch_size", "quality_leaks")
# every declared number and its parts (`metrics.catalog.METRICS`), and every info entry a table or plot reads: a
# number or null where present
METRICS = tuple(dict.fromkeys(k for m in DECLARED if m.kind == "number" for k in (m.key, *m.parts)))
INFO = ("trainable_params", "pruned_rows", "pruned_rows_still_zero", "forget_head_rows_pruned", "params_after",
        "params_before", "optimizer_state_mb")
FIX = "pass a results.json written by prunelora run"


def load_runs(dirs: list[str | Path]) -> dict:
    """One results dict from several run directories (runs concatenated; config and environment of the first)."""
    merged = None
    seen, methods = {}, {}
    for d, results in [(d, _read(d)) for d in dirs]:  # every file checked before any is merged
        if merged is None:
            merged = {**results, "runs": [], "sources": []}
        for key in SAME:
            if results["config"].get(key) != merged["config"].get(key):
                raise UserError(f"'{d}' has other {key} settings than '{dirs[0]}'; only runs of the same request merge")
        for r in results["runs"]:
            _same_method_settings(r["method"], results["config"], d, methods)
            ident = (r["method"], r["seed"], r.get("step"))
            if ident in seen:
                raise UserError(f"{r['method']} seed {r['seed']} is in both '{seen[ident]}' and '{d}'; drop one directory")
            seen[ident] = d
            merged["runs"].append(r)
        merged["sources"].append(str(d))
        merged.setdefault("setups", {}).setdefault(_setup(results.get("environment", {})), []).append(str(d))
    return merged


def method_settings(config: dict, method: str) -> dict:
    """What a method's numbers depend on beyond SAME, from a run's saved config: its variant's overrides applied,
    the sections the method uses (`unlearn`, `pruning`, `lora`...), its `hparams.<method>` and the eval settings
    that change a number (selection, objective, the quality and attack settings)."""
    variant = config.get("variants", {}).get(method)
    if isinstance(variant, dict):
        config = merge(config, {k: v for k, v in variant.items() if k != "method"})
        method = variant.get("method", method)
    uses = METHODS.get(method).uses if method in METHODS.names() else ()
    settings = {section: config.get(section) for section in uses}
    settings["hparams"] = config.get("hparams", {}).get(method)
    settings["eval"] = {k: v for k, v in config.get("eval", {}).items() if k not in EVAL_COLUMNS}
    return settings


def _same_method_settings(method: str, config: dict, d, methods: dict) -> None:
    """Refuse a run of `method` whose settings differ from an earlier directory's run of it: merged, the two would
    become one mean ± std row under the first one's settings."""
    settings = method_settings(config, method)
    first = methods.setdefault(method, (d, settings))
    if first[1] != settings:
        where = first_difference(first[1], settings)
        a, b = (_at(s, where) for s in (first[1], settings))
        raise UserError(f"'{d}' ran {method} with {where}={b!r} and '{first[0]}' with {where}={a!r}; runs merge only "
                        "with the same method settings: report them apart, or run both in one config as variants")


def _at(settings: dict, dotted: str):
    for key in dotted.split("."):
        settings = settings.get(key) if isinstance(settings, dict) else None
    return settings


def _read(d: str | Path) -> dict:
    path = Path(d) / "results.json"
    if not path.is_file():
        raise UserError(f"'{d}' holds no results.json; pass directories written by prunelora run")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"'{path}' is not valid JSON; was the run interrupted while writing it?") from None
    check_results(results, path)
    return results


def check_results(results, path: Path) -> None:
    """A UserError unless `results` has the shape prunelora run writes: a config, and runs that each name their
    method and seed and hold their metrics (or an error), every value a table reads of its type."""
    fix = FIX
    if not isinstance(results, dict) or "config" not in results or "runs" not in results:
        raise UserError(f"'{path}' is not a prunelora results file (it needs 'config' and 'runs'); {fix}")
    for key, kind in (("config", dict), ("runs", list)):
        if not isinstance(results[key], kind):
            raise UserError(f"'{path}': '{key}' is a {type(results[key]).__name__}, not a "
                            f"{'mapping' if kind is dict else 'list'}; {fix}")
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
        data = results.get("data") if isinstance(results.get("data"), dict) else {}
        _check_run(r, f"runs[{i}]", path, data.get("modality", "image"))


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _wrong(path: Path, key: str, value) -> UserError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return UserError(f"'{path}': {key} is {shown}, not a number (or null); {FIX}")


def required(modality: str) -> tuple[str, ...]:
    """What every finished run of `modality` holds (a number, or null for an undefined one): the metrics its progress
    line prints, but time."""
    return keys(modality, progress=True, cost=False)


def _check_run(r: dict, at: str, path: Path, modality: str) -> None:
    """The values of one run that the tables and plots read: numbers or null, the leak and history lists."""
    if "error" in r:  # a failed run: listed apart with its error, no metrics read
        if not isinstance(r["error"], str):
            raise UserError(f"'{path}': {at}.error is not text; {FIX}")
        return
    m, info = r["metrics"], r.get("info", {})
    for key in required(modality):
        if key not in m:
            raise UserError(f"'{path}': {at}.metrics has no '{key}' (every finished run has "
                            f"{', '.join(required(modality))}); {FIX}")
    for where, values, names in (("metrics", m, METRICS), ("info", info, INFO)):
        for key in names:
            if key in values and not _number(values[key]):
                raise _wrong(path, f"{at}.{where}.{key}", values[key])
    if r.get("step") is not None and not (isinstance(r["step"], int) and not isinstance(r["step"], bool)):
        raise UserError(f"'{path}': {at}.step is not an integer; {FIX}")
    _check_list(m.get("quality_leaks"), f"{at}.metrics.quality_leaks", ("id", "epsilon"), path)
    _check_list(info.get("history"), f"{at}.info.history", ("epoch", "forget_acc", "retain_acc"), path, "forget_acc")


def _check_list(items, at: str, keys: tuple[str, ...], path: Path, when: str | None = None) -> None:
    """None, or a list of records whose `keys` are numbers (only the records holding `when`, if given: a history
    entry without forget_acc is not plotted)."""
    if items is None:
        return
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise UserError(f"'{path}': {at} is not a list of records; {FIX}")
    for j, x in enumerate(items):
        if when is None or when in x:
            for key in keys:
                if x.get(key) is None or not _number(x[key]):
                    raise _wrong(path, f"{at}[{j}].{key}", x.get(key))


def _setup(env: dict) -> str:
    """Where a run's times and memory come from: device, its name, threads and processes."""
    from ..store.environment import setup_of  # imports PyTorch: only once every file is checked

    s = setup_of(env)
    return f"{s['device']} ({s['device_name']}), {s['threads']} threads, {s['processes']} process(es)"


def setups_note(results: dict, text=str) -> str | None:
    """A warning when merged runs were timed on different set-ups (their quality metrics still merge); `text`
    renders each set-up and directory (`summary.md` for markdown)."""
    setups = results.get("setups", {})
    if len(setups) < 2:
        return None
    listed = "; ".join(f"{text(setup)}: {', '.join(map(text, dirs))}" for setup, dirs in setups.items())
    return (f"The runs come from {len(setups)} different set-ups ({listed}). Time and memory columns mix them; "
            "compare those only within one set-up.")

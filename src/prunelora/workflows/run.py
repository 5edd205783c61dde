"""`run(config)`: the comparison. For every seed: the original model, then every method (or variant) on a copy of
it, each scored and compared with retrain; a sequence of requests applies each method to what its previous request
left. Results are written as they come (`resume.Progress`) and at the end (`report.write`); a sequence also keeps
each method's model at each request, so that a resumed run goes on from the request it stopped in.

The set-up is `experiment.open_experiment`, one method's run `methods.run.unlearn_one`, the scoring
`metrics.scoring`; this module is only the loop over seeds, requests and methods.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

from torch import nn

from .. import config as C
from ..data import Splits, make_splits, resolve_classes
from ..data.catalog import is_text
from ..engine import dist
from ..methods import UnlearnTask
from ..metrics.catalog import declared, keys
from ..metrics.evidence import EvidenceInput
from ..metrics.scoring import add_comparisons, combine_metrics, evaluate_model, record_info
from ..models import create_model
from ..models.pruning import match_shapes
from ..report.write import write_results
from ..store.checkpoints import plain_state, save_checkpoint, tensors_digest
from ..store.environment import environment, setup_of
from ..store.files import atomic_write, check_cache_dir, check_outputs
from ..store.lock import out_lock
from ..store.resume import RUN_FILES, RUN_FOLDERS, Progress, run_inputs
from .experiment import Experiment, model_facts, open_experiment, train_original
from .resolve import resolve_config
from .unlearn import retrain_reference, unlearn_one


def run(
    cfg: C.ExperimentConfig, out: str | Path | None = None, progress: bool = True, log=print, force: bool = False
) -> dict:
    """The whole comparison, for every seed of `seeds` (or just `seed`). Writes results.json, results.md and
    config.yaml to `out` (if given), and each method's result as soon as it is done, so that the same call
    after an interruption runs only what is missing (`force` starts a directory of another config over). Another
    command writing in `out` at the same time is refused (OUT/.lock)."""
    check_cache_dir()
    if out is None:
        return _run(cfg, None, progress, log, force)
    check_run_outputs(resolve_config(cfg), Path(out))
    with out_lock(out):
        return _run(cfg, out, progress, log, force)


def check_run_outputs(cfg: C.ExperimentConfig, out: Path) -> None:
    """Every file and folder a run writes in `out` can be written there (no folder where a file goes, no file
    where a folder goes), before any work."""
    folders = RUN_FOLDERS if cfg.save_models else tuple(f for f in RUN_FOLDERS if f != "models")
    check_outputs(out, RUN_FILES, folders)
    if (out / "progress").is_dir():
        names = Progress.names(cfg.seeds or [cfg.seed], list(cfg.methods), len(cfg.forget.sequence or []))
        check_outputs(out / "progress", names, flag="--out's progress/")


def _run(cfg: C.ExperimentConfig, out, progress: bool, log, force: bool) -> dict:
    exp = open_experiment(cfg, progress, out)  # bad settings fail here, before anything is written
    if not dist.world().main:
        log = lambda *a, **k: None  # one voice: rank 0
    env = environment(exp.ctx.device, exp.ctx.meter.kind)
    store = None
    if out is not None:
        inputs = run_inputs(exp.config, exp.data)
        store = Progress(out, C.to_dict(exp.config), force, setup_of(env), inputs, log, progress_keys(exp.data))
    runs = []
    for seed in exp.config.seeds or [exp.config.seed]:
        runs += run_seed(exp.for_seed(seed), out, log, store)
    results = {
        "config": C.to_dict(exp.config),
        "environment": env,
        "data": {"classes": exp.data.classes, "forget_classes": exp.splits.forget_classes, "sizes": _sizes(exp.splits),
                 "modality": "text" if is_text(exp.data) else "image"},
        "runs": runs,
    }
    if out is not None and is_text(exp.data):  # what decodes the token ids of the models it saves
        atomic_write(Path(out) / "tokenizer.json", exp.data.tokenizer_json)
    if out is not None:
        write_results(results, Path(out))
    return results


def run_seed(exp: Experiment, out, log, store: Progress | None = None) -> list[dict]:
    """Original + every method for one seed; each entry compared with this seed's retrain. A sequence of
    requests applies each method to the model its previous request left; retrain starts afresh each time."""
    cfg, data = exp.config, exp.data
    original, original_cost = train_original(cfg, data, exp.ctx)
    if cfg.forget.sequence is None:
        return run_request(exp, original, original_cost, {}, out, log, store=store)[0]
    runs, models, spent, forgotten = [], {}, {}, []
    for step, request in enumerate(cfg.forget.sequence, 1):
        request = resolve_classes(request, data.classes)
        forgotten += [c for c in request if c not in forgotten]
        step_splits = make_splits(data.y_train, data.y_test, resolve_classes(forgotten, data.classes))
        step_exp = dataclasses.replace(exp, splits=step_splits)
        step_runs, models = run_request(step_exp, original, original_cost, models, out, log, step, store)
        for r in step_runs:
            r.update(step=step, request=request, sizes=_sizes(step_splits))
            if "error" not in r and r["method"] != "original":
                spent[r["method"]] = spent.get(r["method"], 0.0) + r["metrics"]["time_s"]
                r["metrics"]["cumulative_time_s"] = spent[r["method"]]
        runs += step_runs
    return runs


def run_request(
    exp: Experiment, original: nn.Module, original_cost: dict, starts: dict, out, log, step: int | None = None,
    store: Progress | None = None,
) -> tuple[list[dict], dict]:
    """One request: evaluate the original, run every method from `starts[name]` (default: the original),
    compare with retrain. Returns the run entries and each method's resulting model (None if it failed).
    Methods that `store` holds from an interrupted run are loaded, not run again; in a sequence (`step`), with the
    model each left at this request, where its next request starts."""
    cfg, ctx = exp.config, exp.ctx
    kept, models = {"original": {}}, {}
    scores = evaluate_model(original, exp.data, exp.splits, cfg, ctx, kept["original"], method="original")
    runs = [_run_entry("original", cfg, combine_metrics(scores, original_cost), original_cost)]
    log(_progress_line(runs[-1]))
    task = exp.task()
    # eval.select=best: retrain's scores on the validation split, the reference of the gap objective
    validation = retrain_reference(exp.validation, original, task, ctx) if exp.validation is not None else None
    for name in cfg.methods:
        done = store.load(cfg.seed, name, step) if store is not None else None
        model = None
        if done is not None and step is not None and "error" not in done[0]:
            model = step_model(exp, store.path(cfg.seed, name, ".safetensors", step))
            done = done if model is not None else None  # without its model a later request cannot go on: run again
        if done is not None:
            runs.append(done[0])
            kept[name], models[name] = {"outputs": done[1]}, model
            log(f"seed {cfg.seed} {name:>15}: done before, loaded from {store.dir}")
            continue
        entry, models[name], kept[name] = _run_method(exp, task, name, starts.get(name, original), log, validation)
        runs.append(entry)
        if store is not None:
            saved = step_model_bytes(models[name]) if step is not None and models[name] is not None else None
            store.save(cfg.seed, name, entry, kept[name].get("outputs"), step, saved)
        if models[name] is not None and cfg.save_models and out is not None:
            _save_model(exp, name, models[name], entry, Path(out), step)
    add_comparisons(runs, kept, EvidenceInput(exp.data, exp.splits, dataclasses.replace(ctx, seed=cfg.seed), cfg.eval, cfg))
    return runs, models


def step_model_bytes(model: nn.Module) -> bytes:
    """A method's model at one request of a sequence, as safetensors with the digest of its tensors and the names of
    its frozen parameters (the next request's training sees the same model as in an uninterrupted run)."""
    from safetensors.torch import save

    state = plain_state(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    return save(state, metadata={"digest": tensors_digest(state), "frozen": json.dumps(frozen)})


def step_model(exp: Experiment, path: Path) -> nn.Module | None:
    """The model `step_model_bytes` wrote, rebuilt for `exp` (channels removed as saved), or None if it is missing
    or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = path.read_bytes()
        state = load(raw)
        meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]).get("__metadata__") or {}
        frozen = set(json.loads(meta.get("frozen", "[]")))
    except (OSError, SafetensorError, ValueError, struct.error):
        return None
    if meta.get("digest") != tensors_digest(state):
        return None
    data = exp.data
    model = create_model(dataclasses.replace(exp.config.model, pretrained=False), data.num_classes, data.in_chans,
                         data.image_size)
    match_shapes(model, state)
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return exp.ctx.prepare_model(model).eval()


def _run_method(exp: Experiment, task: UnlearnTask, name: str, start: nn.Module | None, log, validation=None):
    """(entry, unlearned model or None, {"outputs": its logits}) of one method; a diverging method is an entry
    with an error, and the others still run."""
    cfg = exp.config
    if start is None:
        return _failed(name, cfg, "failed at an earlier request"), None, {}
    try:
        model, record = unlearn_one(name, start, task, exp.ctx, validation)
        kept = {}
        scores = evaluate_model(model, exp.data, exp.splits, cfg, exp.ctx, kept, method=name)
    except FloatingPointError as err:  # a diverging method: report it, keep the others
        log(f"seed {cfg.seed} {name:>15}: failed: {err}")
        return _failed(name, cfg, str(err)), None, {}
    entry = _run_entry(name, cfg, combine_metrics(scores, record), record)
    log(_progress_line(entry))
    return entry, model, kept


def _save_model(exp: Experiment, name: str, model: nn.Module, entry: dict, out: Path, step: int | None) -> None:
    """OUT/models/<method>[-seed<N>][-request<K>].safetensors, with the facts that rebuild it."""
    cfg = exp.config
    suffix = (f"-seed{cfg.seed}" if cfg.seeds else "") + (f"-request{step}" if step else "")
    extra = {"method": name, **model_facts(exp.data, "removed_layers" in entry["info"])}
    save_checkpoint(out / "models" / f"{name}{suffix}.safetensors", model, C.to_dict(cfg), extra)


def _run_entry(method: str, cfg, metrics: dict, record: dict) -> dict:
    return {"method": method, "seed": cfg.seed, "metrics": metrics, "info": record_info(record)}


def _failed(method: str, cfg, error: str) -> dict:
    return {"method": method, "seed": cfg.seed, "metrics": {}, "info": {}, "error": error}


def _progress_line(entry: dict) -> str:
    """'seed S method: <each declared progress metric>  <time> s'."""
    m = entry["metrics"]
    shown = declared("image" if "UA" in m else "text", progress=True, cost=False)
    return (f"seed {entry['seed']} {entry['method']:>15}: "
            + "  ".join(f"{t.header} {m[t.key]:6.{t.digits}f}" for t in shown) + f"  {m['time_s']:6.1f} s")


def progress_keys(data) -> tuple[str, ...]:
    """The metrics every finished method's progress entry holds."""
    return keys("text" if is_text(data) else "image", progress=True)


def _sizes(splits: Splits) -> dict:
    return {k: len(getattr(splits, k)) for k in ("forget", "retain", "test_retain", "test_forget")}

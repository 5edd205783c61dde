"""The experiment: train the original, run every method, evaluate, compare with retrain, write results.

`run(config)` is what `prunelora run` calls; `train_original`, `unlearn_one` and `evaluate_model` are what
`prunelora train / unlearn / evaluate` call. Each method starts from its own copy of the original and
is seeded from (seed, method name), so a method's numbers do not depend on which methods ran before it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import zlib
from pathlib import Path

import torch
from torch import nn

from . import cache, dist
from . import config as C
from .context import Context, pick_device, seed_everything, set_threads
from .data import (
    DATASETS,
    ImageData,
    Splits,
    default_forget,
    load_dataset,
    make_sample_splits,
    make_splits,
    random_indices,
    read_indices,
    resolve_classes,
)
from .errors import UserError
from .io import atomic_write, environment, finite, load_weights, read_state_dict, save_checkpoint, setup_of
from .methods import UnlearnTask, method_task, resolve_methods
from .methods._train import fit, recalibrate_bn, recipe_from
from .metrics.cost import CostMeter
from .metrics.evaluate import accuracy, avg_gap, outputs, predict, quality
from .metrics.evidence import EVIDENCE, EvidenceInput
from .models import create_model, get_spec
from .resume import Progress


def resolve_config(cfg: C.ExperimentConfig) -> C.ExperimentConfig:
    """Check names and fill every `None` with the model preset's value; the result is what runs."""
    cfg = copy.deepcopy(cfg)
    spec = get_spec(cfg.model.name)
    DATASETS.get(cfg.data.name)
    resolve_methods(cfg)
    if cfg.forget.kind == "classes" and cfg.forget.classes is None and cfg.forget.sequence is None:
        cfg.forget.classes = default_forget(cfg.data.name)
    for name in cfg.eval.evidence:
        EVIDENCE.get(name)
    t, r = cfg.train, spec.recipe
    t.epochs, t.optimizer = t.epochs or r.epochs, t.optimizer or r.optimizer
    t.lr = t.lr if t.lr is not None else r.lr
    t.weight_decay = t.weight_decay if t.weight_decay is not None else r.weight_decay
    cfg.lora.r = cfg.lora.r or spec.lora_r
    cfg.lora.alpha = cfg.lora.alpha if cfg.lora.alpha is not None else spec.lora_alpha
    return cfg


def prepare(cfg: C.ExperimentConfig, device: torch.device | None = None) -> tuple[ImageData, Splits]:
    """The data set (moved whole to `device`, as uint8, when it is a GPU) and the forget/retain/test splits."""
    data = load_dataset(cfg.data)
    splits = make_request_splits(cfg.forget, data)
    if device is not None and device.type == "cuda":
        data = data.to(device)
    return data, splits


def make_request_splits(forget: C.ForgetConfig, data: ImageData) -> Splits:
    """The splits of a deletion request: whole classes, or samples (a random fraction or listed indices)."""
    n = len(data.y_train)
    if forget.fraction is not None:
        return make_sample_splits(data.y_train, data.y_test, random_indices(n, forget.fraction, forget.seed))
    if forget.indices is not None:
        return make_sample_splits(data.y_train, data.y_test, read_indices(forget.indices, n))
    if forget.sequence is not None:  # the classes of every request together
        return make_splits(data.y_train, data.y_test, resolve_classes([c for request in forget.sequence for c in request], data.classes))
    return make_splits(data.y_train, data.y_test, resolve_classes(forget.classes, data.classes))


def model_facts(data: ImageData, channels_removed: bool = False) -> dict:
    """What rebuilding a saved model needs besides its config: class count, input shape, removed channels."""
    return {"num_classes": data.num_classes, "in_chans": data.in_chans, "image_size": data.image_size,
            "channels_removed": channels_removed}


def make_context(cfg: C.ExperimentConfig, progress: bool) -> Context:
    """Threads, device (each process its own GPU under torchrun) and the process group; progress bars on
    rank 0 only."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    w = dist.world()
    if w.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", w.local_rank)
    dist.init(device.type)
    progress = progress and w.main
    return Context(device, cfg.seed, progress, amp=cfg.amp, channels_last=cfg.channels_last, compile=cfg.compile)


def method_seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def train_original(cfg: C.ExperimentConfig, data: ImageData, ctx: Context) -> tuple[nn.Module, dict]:
    """Train the original model on the whole train set (or load `model.init`); returns it and its cost record."""
    seed_everything(cfg.seed)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    if cfg.model.init:
        load_weights(model, read_state_dict(cfg.model.init), cfg.model.init)
        record = {"time_s": 0.0, "epochs": 0, "peak_memory_mb": 0.0, "loaded_from": cfg.model.init}
        return ctx.prepare_model(model).eval(), record
    model = ctx.prepare_model(model)
    everything = torch.arange(len(data.y_train))
    key, described = cache.model_key("original", cfg, cfg.seed, everything, ctx)
    if cfg.cache and (record := cache.load("original", key, model)) is not None:
        return model.eval(), record
    ctx.meter = CostMeter(ctx.device)
    with ctx.meter.measure():
        history = fit(model, data, everything, recipe_from(cfg.train), ctx, desc="original")
    record = {"time_s": ctx.meter.seconds, "epochs": cfg.train.epochs, "peak_memory_mb": ctx.meter.peak_mb}
    if cfg.cache:
        cache.store("original", key, described, model, record)
    return model, {**record, "history": history}


def unlearn_one(name: str, original: nn.Module, task: UnlearnTask, ctx: Context) -> tuple[nn.Module, dict]:
    """Run one method (or variant) on a copy of `original`; returns the unlearned model and its cost record.
    A variant is seeded like its base method, so that it differs from it only by its settings."""
    spec, task = method_task(task, name)
    bn = (task.train_recipe() if spec.uses == ("train",) else task.unlearn_recipe()).bn  # as its fit() finishes
    monitor = learning_curve(task, bn, ctx) if task.config.eval.curves else None
    ctx = dataclasses.replace(ctx, seed=method_seed(task.config.seed, spec.name), meter=CostMeter(ctx.device), monitor=monitor)
    seed_everything(ctx.seed)
    model = copy.deepcopy(original)
    with ctx.meter.measure():
        out = spec.fn(model, task, ctx)
    record = {"time_s": ctx.meter.seconds, "epochs": out.epochs, "peak_memory_mb": ctx.meter.peak_mb,
              "optimizer_state_mb": ctx.meter.optimizer_bytes / 2**20, **out.info}
    return out.model.eval(), record


def learning_curve(task: UnlearnTask, bn: str, ctx: Context):
    """A monitor for `fit`: accuracy (%) on the forget set (100 - UA) and on the retain set (RA) after each epoch,
    measured as the final metrics are: on a copy of the model with LoRA merged and, under bn=recalibrate,
    BatchNorm statistics recomputed over the retain set, from logits of the whole train set at the evaluation
    batch size. The last point is therefore the table's value. It draws no random numbers, so the method's
    results do not change; its time is left out of the method's."""
    data, splits, batch_size = task.data, task.splits, task.config.eval.batch_size
    labels = data.y_train.cpu().numpy()
    forget, retain = splits.forget.numpy(), splits.retain.numpy()

    def monitor(model: nn.Module) -> dict:
        final = copy.deepcopy(model)
        if bn == "recalibrate":
            recalibrate_bn(final, data, splits.retain, ctx)
        if hasattr(final, "merge_and_unload"):  # a peft model: merged after training, as the method does
            final = final.merge_and_unload()
        logits = predict(final, data, data.x_train, ctx, batch_size)
        return {"forget_acc": accuracy(logits[forget], labels[forget]), "retain_acc": accuracy(logits[retain], labels[retain])}

    return monitor


def evaluate_model(
    model: nn.Module, data: ImageData, splits: Splits, cfg: C.ExperimentConfig, ctx: Context, keep: dict | None = None
) -> dict:
    """UA, RA, TA, MIA... plus the evidence metrics that need no reference; `keep["outputs"]` receives the
    model's (train, test) logits for the comparisons with retrain."""
    seed_everything(cfg.seed)
    ctx = dataclasses.replace(ctx, seed=cfg.seed)
    outs = outputs(model, data, ctx, cfg.eval.batch_size)
    metrics = quality(*outs, data, splits, cfg.seed)
    inputs = EvidenceInput(data, splits, ctx, cfg.eval, cfg)
    for name in cfg.eval.evidence:
        spec = EVIDENCE.get(name)
        if not spec.needs_reference:
            seed_everything(cfg.seed)
            metrics.update(spec.fn(model, outs, inputs))
    if keep is not None:
        keep["outputs"] = outs
    return metrics


def combine_metrics(quality: dict, record: dict) -> dict:
    """Quality metrics plus the cost of the step (seconds, seconds per epoch, peak memory)."""
    time_s, epochs = record["time_s"], record["epochs"]
    per_epoch = time_s / epochs if epochs else None
    return {**quality, "time_s": time_s, "time_per_epoch_s": per_epoch, "peak_memory_mb": record["peak_memory_mb"]}


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory (it is created if missing)")


def run(
    cfg: C.ExperimentConfig, out: str | Path | None = None, progress: bool = True, log=print, force: bool = False
) -> dict:
    """The whole comparison, for every seed of `seeds` (or just `seed`). Writes results.json, results.md and
    config.yaml to `out` (if given), and each method's result as soon as it is done, so that the same call
    after an interruption runs only what is missing (`force` starts a directory of another config over)."""
    cfg = resolve_config(cfg)
    if out is not None:
        check_out_dir(Path(out))
    ctx = make_context(cfg, progress)
    if not dist.world().main:
        log = lambda *a, **k: None  # one voice: rank 0
    data, splits = prepare(cfg, ctx.device)  # bad data settings fail here, before anything is written
    env = environment(ctx.device, ctx.meter.kind)
    store = Progress(out, C.to_dict(cfg), force, setup_of(env)) if out is not None else None
    runs = []
    for seed in cfg.seeds or [cfg.seed]:
        seed_cfg = dataclasses.replace(cfg, seed=seed)
        runs += run_seed(seed_cfg, data, splits, dataclasses.replace(ctx, seed=seed), out, log, store)
    results = {
        "config": C.to_dict(cfg),
        "environment": env,
        "data": {"classes": data.classes, "forget_classes": splits.forget_classes, "sizes": _sizes(splits)},
        "runs": runs,
    }
    if out is not None:
        write_results(results, Path(out))
    return results


def run_seed(cfg: C.ExperimentConfig, data: ImageData, splits: Splits, ctx: Context, out, log, store=None) -> list[dict]:
    """Original + every method for one seed; each entry compared with this seed's retrain. A sequence of
    requests applies each method to the model its previous request left; retrain starts afresh each time."""
    original, original_cost = train_original(cfg, data, ctx)
    if cfg.forget.sequence is None:
        return run_request(cfg, data, splits, ctx, original, original_cost, {}, out, log, store=store)[0]
    runs, models, spent, forgotten = [], {}, {}, []
    for step, request in enumerate(cfg.forget.sequence, 1):
        request = resolve_classes(request, data.classes)
        forgotten += [c for c in request if c not in forgotten]
        step_splits = make_splits(data.y_train, data.y_test, resolve_classes(forgotten, data.classes))
        step_runs, models = run_request(cfg, data, step_splits, ctx, original, original_cost, models, out, log, step)
        for r in step_runs:
            r.update(step=step, request=request, sizes=_sizes(step_splits))
            if "error" not in r and r["method"] != "original":
                spent[r["method"]] = spent.get(r["method"], 0.0) + r["metrics"]["time_s"]
                r["metrics"]["cumulative_time_s"] = spent[r["method"]]
        runs += step_runs
    return runs


def run_request(
    cfg: C.ExperimentConfig, data: ImageData, splits: Splits, ctx: Context, original: nn.Module, original_cost: dict,
    starts: dict, out, log, step: int | None = None, store=None,
) -> tuple[list[dict], dict]:
    """One request: evaluate the original, run every method from `starts[name]` (default: the original),
    compare with retrain. Returns the run entries and each method's resulting model (None if it failed).
    Methods that `store` holds from an interrupted run are loaded, not run again."""
    task = UnlearnTask(data, splits, cfg)
    kept, models = {"original": {}}, {}
    scores = evaluate_model(original, data, splits, cfg, ctx, kept["original"])
    runs = [_run_entry("original", cfg, combine_metrics(scores, original_cost), original_cost)]
    log(_progress_line(runs[-1]))
    for name in cfg.methods:
        done = store.load(cfg.seed, name) if store is not None else None
        if done is not None:
            runs.append(done[0])
            kept[name], models[name] = {"outputs": done[1]}, None
            log(f"seed {cfg.seed} {name:>15}: done before, loaded from {store.dir}")
            continue
        start = starts.get(name, original)
        if start is None:
            runs.append({"method": name, "seed": cfg.seed, "metrics": {}, "info": {}, "error": "failed at an earlier request"})
            models[name] = None
            continue
        try:
            model, record = unlearn_one(name, start, task, ctx)
            kept[name] = {}
            scores = evaluate_model(model, data, splits, cfg, ctx, kept[name])
        except FloatingPointError as err:  # a diverging method: report it, keep the others
            runs.append({"method": name, "seed": cfg.seed, "metrics": {}, "info": {}, "error": str(err)})
            log(f"seed {cfg.seed} {name:>15}: failed: {err}")
            models[name] = None
            if store is not None and step is None:
                store.save(cfg.seed, name, runs[-1], None)
            continue
        models[name] = model
        runs.append(_run_entry(name, cfg, combine_metrics(scores, record), record))
        if store is not None and step is None:  # sequences restart a seed whole: later requests need the models
            store.save(cfg.seed, name, runs[-1], kept[name]["outputs"])
        log(_progress_line(runs[-1]))
        if cfg.save_models and out is not None:
            suffix = (f"-seed{cfg.seed}" if cfg.seeds else "") + (f"-request{step}" if step else "")
            extra = {"method": name, **model_facts(data, "removed_layers" in record)}
            save_checkpoint(Path(out) / "models" / f"{name}{suffix}.safetensors", model, C.to_dict(cfg), extra)
    _add_comparisons(runs, kept, EvidenceInput(data, splits, dataclasses.replace(ctx, seed=cfg.seed), cfg.eval, cfg))
    return runs, models


def _run_entry(method: str, cfg, metrics: dict, record: dict) -> dict:
    info = {k: v for k, v in record.items() if k not in ("time_s", "peak_memory_mb")}
    return {"method": method, "seed": cfg.seed, "metrics": metrics, "info": info}


def _progress_line(entry: dict) -> str:
    m = entry["metrics"]
    return f"seed {entry['seed']} {entry['method']:>15}: UA {m['UA']:6.2f}  MIA {m['MIA']:6.2f}  RA {m['RA']:6.2f}  TA {m['TA']:6.2f}  {m['time_s']:6.1f} s"


def _add_comparisons(runs: list[dict], kept: dict, inputs: EvidenceInput) -> None:
    """Avg. Gap, time ratio and the evidence metrics that compare with retrain, when retrain ran."""
    ref = next((r["metrics"] for r in runs if r["method"] == "retrain" and "error" not in r), None)
    reference = [EVIDENCE.get(n) for n in inputs.config.evidence if EVIDENCE.get(n).needs_reference]
    for r in runs:
        if "error" in r:
            continue
        m = r["metrics"]
        for spec in reference if ref and kept["retrain"].get("outputs") is not None else []:
            m.update(spec.fn(kept[r["method"]]["outputs"], kept["retrain"]["outputs"], inputs))
        m["avg_gap"] = avg_gap(m, ref) if ref else None
        m["time_vs_retrain"] = m["time_s"] / ref["time_s"] if ref and r["method"] != "original" else None


def _sizes(splits: Splits) -> dict:
    return {k: len(getattr(splits, k)) for k in ("forget", "retain", "test_retain", "test_forget")}


def write_results(results: dict, out: Path) -> None:
    from .report import markdown_report

    atomic_write(out / "config.yaml", C.dump_yaml(results["config"]))
    atomic_write(out / "results.md", markdown_report(results))
    atomic_write(out / "results.json", json.dumps(finite(results), indent=2, allow_nan=False))
    from .summary import write_report

    write_report(finite(results), out, formats=("csv", "tex"))  # results.md has the tables; add CSV, LaTeX, plots

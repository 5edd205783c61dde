"""`prunelora tune`: a method's hyper-parameters searched with Optuna (TPE, seeded) on the validation split, never
the test set.

Each trial draws values from the method's search space (`space` beside its config in `methods/catalog.py`), runs
the method on the validation view (`validation.py`) for every seed of the config, and scores it with
`eval.objective` (mean over seeds, lower is better, in points). The original and retrain of the view are trained
once per seed, from the model cache when they are there. Optuna's storage is `OUT/tune.db`: the same command
started again continues the study (a `--trials` budget counts the trials already done). The winner is written as
`OUT/best.yaml`, a config `prunelora run --config` takes, beside `trials.csv`, `trials.md` and `tune.json`, which
states the time spent tuning apart from the method's own time per run.

This module imports no PyTorch or Optuna until the inputs are checked.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import time
from pathlib import Path

from .. import config as C
from ..errors import UserError
from ..methods.catalog import METHODS
from ..metrics.catalog import keys
from ..registry import unknown_name_message
from ..store.files import atomic_write, to_json
from .resolve import check_out, images_only, resolve_config

DEFAULT_TRIALS = 20  # the budget when neither --trials nor --seconds is given
MAX_TRIALS = 100_000  # beyond this a study's storage and TPE's per-trial cost (which grows with the trials) dominate
MAX_SECONDS = 30 * 24 * 3600.0  # a longer --seconds (inf included) is a typo, not a budget
WORST = 100.0  # the objective of a trial whose training diverged: both objectives are at most 100 points
# per trial, mean over seeds: the model's own figures of the image table (UA, MIA, RA, TA, forget_TA; TA and
# forget_TA on validation), as declared
METRICS = keys("image", "main", reference=False, cost=False)
STUDY = "prunelora-tune"


def check_tune(cfg: C.ExperimentConfig, method: str, out: str | Path, trials: int | None, seconds: float | None
               ) -> tuple[C.ExperimentConfig, dict, int | None]:
    """(resolved config running `method` alone, its search space, the trial budget), every input checked."""
    if method not in METHODS:
        raise UserError(f"--method: {unknown_name_message('method', method, METHODS.names())}")
    space = METHODS.get(method).config.space
    if not space:
        raise UserError(f"method '{method}' has nothing to tune (no search space); tune another method")
    if trials is not None and not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials is {trials}; it must be at least 1 and at most {MAX_TRIALS}")
    if seconds is not None and not 0 < seconds <= MAX_SECONDS:  # NaN fails both comparisons
        raise UserError(f"--seconds is {seconds}; it must be a positive number of seconds, at most {MAX_SECONDS:.0f} "
                        "(30 days)")
    if trials is None and seconds is None:
        trials = DEFAULT_TRIALS
    cfg = copy.deepcopy(cfg)
    cfg.methods = [method]
    cfg = images_only(resolve_config(cfg), "tune")
    check_out(cfg, out)
    return cfg, space, trials


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("prunelora tune needs Optuna, which is not installed: pip install prunelora[tune]") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def trial_config(cfg: C.ExperimentConfig, method: str, params: dict) -> C.ExperimentConfig:
    """`cfg` with the method's settings `params` (hparams.<method>.<key>)."""
    cfg = copy.deepcopy(cfg)
    cfg.hparams[method] = {**cfg.hparams.get(method, {}), **params}
    return cfg


def tune(cfg: C.ExperimentConfig, method: str, out: str | Path, trials: int | None = None,
         seconds: float | None = None, progress: bool = True, log=print) -> dict:
    """Search `method`'s hyper-parameters within `trials` trials (all sessions together) and/or `seconds` (this
    session); writes best.yaml, trials.csv, trials.md and tune.json to `out` and returns tune.json's content."""
    cfg, space, trials = check_tune(cfg, method, out, trials, seconds)
    optuna = _optuna()
    out = Path(out)
    study = open_study(optuna, cfg, out)
    start = time.perf_counter()
    bases = setup(cfg)  # per seed: (original, task, validation with retrain's reference)
    study.set_user_attr("setup_seconds", study.user_attrs.get("setup_seconds", 0.0) + time.perf_counter() - start)
    floats = lambda metrics: {k: float(metrics[k]) for k in METRICS}
    study.set_user_attr("original", {str(s): floats(b[4]) for s, b in bases.items()})
    if cfg.eval.objective == "gap":
        study.set_user_attr("reference", {str(s): floats(b[2].reference) for s, b in bases.items()})
    done = len(finished(study))
    remaining = None if trials is None else trials - done
    # TPE models the trials after its first random ones: a third of a small budget, at most Optuna's 10;
    # a resumed study is seeded anew so that it draws new values
    startup = 10 if trials is None else max(3, min(10, trials // 3))
    study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + done, n_startup_trials=startup)
    if remaining is None or remaining > 0:
        bar = Progress(trials, done, method, progress, log)
        objective = lambda trial: run_trial(trial, cfg, method, space, bases)
        try:
            study.optimize(objective, n_trials=remaining, timeout=seconds, callbacks=[bar])
        finally:
            bar.close()
    return write_outputs(study, cfg, method, out)


def open_study(optuna, cfg: C.ExperimentConfig, out: Path):
    """The study in OUT/tune.db (created, or continued when it holds a tune of this very config)."""
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'tune.db').resolve()}"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize", load_if_exists=True)
    mine = C.to_dict(cfg)
    saved = study.user_attrs.get("config")
    if saved is None:
        study.set_user_attr("config", mine)
    elif saved != mine:
        from ..store.resume import first_difference

        key = first_difference(saved, mine)
        raise UserError(f"--out '{out}' holds a tune of another config ({key} differs); pass another --out")
    return study


def setup(cfg: C.ExperimentConfig) -> dict:
    """Per seed: (the validation view's original, the task, the validation split with retrain's reference, the
    context, the original's metrics on the view)."""
    from ..methods import UnlearnTask
    from .experiment import check_model, make_context, train_original
    from .unlearn import retrain_reference
    from .validation import open_validation

    validation = open_validation(cfg)
    ctx = make_context(cfg, progress=False)
    if ctx.device.type == "cuda":
        validation.data = validation.data.to(ctx.device)
    check_model(cfg, validation.data)
    bases = {}
    for seed in cfg.seeds or [cfg.seed]:
        seed_cfg, seed_ctx = dataclasses.replace(cfg, seed=seed), dataclasses.replace(ctx, seed=seed)
        original, _ = train_original(seed_cfg, validation.data, seed_ctx)
        task = UnlearnTask(validation.data, validation.splits, seed_cfg)
        scores = validation.metrics(original, seed_ctx, cfg.eval.batch_size, seed)  # where every trial starts
        bases[seed] = (original, task, retrain_reference(validation, original, task, seed_ctx), seed_ctx, scores)
    return bases


def run_trial(trial, cfg: C.ExperimentConfig, method: str, space: dict, bases: dict) -> float:
    """One trial: the method with drawn settings on every seed; the mean objective (WORST if it diverged)."""
    from .unlearn import unlearn_one

    params = {key: spec.suggest(trial, key) for key, spec in space.items()}
    scores, metrics, seconds, epochs = [], [], [], []
    try:
        for original, task, validation, ctx, _ in bases.values():
            task = dataclasses.replace(task, config=trial_config(task.config, method, params))
            model, record = unlearn_one(method, original, task, ctx, validation)
            metrics.append(validation.metrics(model, ctx, cfg.eval.batch_size, task.config.seed))
            scores.append(validation.score(metrics[-1]))
            seconds.append(record["time_s"])
            epochs.append(record.get("selected_epoch"))
    except FloatingPointError as err:
        trial.set_user_attr("diverged", str(err))
        return WORST
    trial.set_user_attr("metrics", {k: _mean([m[k] for m in metrics]) for k in METRICS})
    trial.set_user_attr("method_seconds", _mean(seconds))
    if cfg.eval.select == "best":
        trial.set_user_attr("selected_epochs", epochs)
    return _mean(scores)


def _mean(values) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


class Progress:
    """Optuna callback: a progress bar over the trials with the best value so far, and a line per trial."""

    def __init__(self, total: int | None, done: int, method: str, show: bool, log):
        from tqdm.auto import tqdm

        self.log = log if show else (lambda *a, **k: None)
        self.bar = tqdm(total=total, initial=done, desc=f"tune {method}", unit="trial", disable=None if show else True)

    def __call__(self, study, trial) -> None:
        self.bar.update()
        best = study.best_value if finished(study) else float("nan")
        self.bar.set_postfix(best=f"{best:.2f}")
        settings = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        value = "diverged" if "diverged" in trial.user_attrs else f"{trial.value:.2f}" if trial.value is not None else "failed"
        self.log(f"trial {trial.number}: {value} (best {best:.2f}) {settings}")

    def close(self) -> None:
        self.bar.close()


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state == TrialState.COMPLETE]


# ---------------------------------------------------------------- outputs


def write_outputs(study, cfg: C.ExperimentConfig, method: str, out: Path) -> dict:
    """best.yaml, trials.csv, trials.md and tune.json from the study; returns tune.json's content."""
    trials = finished(study)
    if not any("diverged" not in t.user_attrs for t in trials):
        raise UserError(f"no trial finished without diverging ({len(trials)} diverged); give more --trials or "
                        f"--seconds, then run the same command again: it continues the study in {out}/tune.db")
    best = study.best_trial
    tuning_s = study.user_attrs.get("setup_seconds", 0.0) + sum(_duration(t) for t in trials)
    summary = {
        "method": method, "objective": cfg.eval.objective, "select": cfg.eval.select, "seeds": cfg.seeds or [cfg.seed],
        "validation": {"fraction": cfg.eval.val_fraction, "seed": cfg.eval.val_seed},
        "trials": len(trials), "diverged": sum("diverged" in t.user_attrs for t in trials),
        "best": {"trial": best.number, "value": best.value, "params": best.params,
                 "metrics_on_validation": best.user_attrs.get("metrics"), "selected_epochs": best.user_attrs.get("selected_epochs")},
        "original_on_validation": study.user_attrs.get("original"),
        "retrain_on_validation": study.user_attrs.get("reference"),
        # the cost of tuning, never folded into the method's: what one run of the tuned method takes, and
        # what finding it took (the validation original and retrain per seed, then every trial)
        "method_seconds_per_run": best.user_attrs.get("method_seconds"),
        "tuning_seconds": tuning_s,
        "setup_seconds": study.user_attrs.get("setup_seconds", 0.0),
    }
    header = (f"# prunelora tune --method {method}: best of {len(trials)} trials (trial {best.number}), "
              f"objective {cfg.eval.objective} = {best.value:.3f} on the validation split\n"
              f"# tuning took {tuning_s:.0f} s; the method itself {summary['method_seconds_per_run']:.1f} s per run\n")
    atomic_write(out / "best.yaml", header + C.dump_yaml(trial_config(cfg, method, best.params)))
    rows = trial_rows(study)
    atomic_write(out / "trials.csv", _csv(rows))
    atomic_write(out / "trials.md", _markdown(rows, best.number))
    atomic_write(out / "tune.json", to_json(summary))
    return summary


def _duration(trial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def trial_rows(study) -> list[dict]:
    """One row per finished trial: its settings, objective, validation metrics (mean over seeds) and times."""
    rows = []
    for t in finished(study):
        metrics = t.user_attrs.get("metrics") or {}
        row = {"trial": t.number, "objective": t.value, **t.params}
        row.update({("VA" if k == "TA" else "forget_VA" if k == "forget_TA" else k): metrics.get(k) for k in METRICS})
        if "selected_epochs" in t.user_attrs:
            row["selected_epochs"] = " ".join(str(e) for e in t.user_attrs["selected_epochs"])
        row.update(method_s=t.user_attrs.get("method_seconds"), trial_s=_duration(t), diverged="diverged" in t.user_attrs)
        rows.append(row)
    return rows


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(rows: list[dict], best: int) -> str:
    from ..report.tables import _table

    keys = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    table = _table(keys, [[cell(row.get(k)) + (" (best)" if k == "trial" and row["trial"] == best else "") for k in keys]
                          for row in sorted(rows, key=lambda r: r["objective"])])
    return ("Trials, best first. objective: lower is better (points); VA, forget_VA: accuracy on the retain- and "
            "forget-validation samples; UA, MIA, RA on the validation view's train set; method_s: the method's own "
            "time per run, trial_s: the whole trial (every seed and its scoring).\n\n" + table + "\n")

"""A run's report, results.md: the paper's table, the evidence, the attack variants and the pruning facts (for a
sequence of requests, every table after each request). With several seeds each cell is mean ± std over them."""

from __future__ import annotations

import math

from ..metrics.catalog import Metric, declared
from .summary import cell, md, summary_rows


def _fmt(value, digits: int = 2, fmt: str = "f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}{fmt}}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def modality(results: dict) -> str:
    """image | text: the modality of the run's data set (runs recorded before text existed are image runs)."""
    return results.get("data", {}).get("modality", "image")


def columns(results: dict, table: str) -> list[tuple[Metric, str]]:
    """(metric, header) of every declared metric `table` shows that some run of `results` recorded, in declaration
    order (`metrics.catalog.METRICS`)."""
    runs = results["runs"]
    return [(m, m.shown_in(table)) for m in declared(modality(results), table)
            if any(m.key in r["metrics"] for r in runs)]


def metric_table(results: dict, table: str, cells=None) -> str:
    """The declared `table` of `results`: one row per run with each metric at its declared digits, or with several
    seeds one row per method of mean ± std over them (2 decimals on images). `cells(run, metric)` may write a
    one-seed cell its own way (None: the default)."""
    shown = columns(results, table)
    header = ["Method"] + [h for _, h in shown]
    if len(seeds_of(results)) > 1:
        return _aggregate_table(results, [m for m, _ in shown], header)
    own = cells or (lambda r, m: None)
    rows = [[md(r["method"])] + [own(r, m) or _fmt(r["metrics"].get(m.key), m.digits, m.fmt) for m, _ in shown]
            for r in results["runs"]]
    return _table(header, rows)


def completed(results: dict) -> dict:
    """The results without the runs that failed (a diverging loss): those are listed apart."""
    return {**results, "runs": [r for r in results["runs"] if "error" not in r]}


def failures(results: dict) -> str:
    failed = [r for r in results["runs"] if "error" in r]
    if not failed:
        return ""
    lines = [f"- {md(r['method'])} (seed {r['seed']}): {md(r['error'])}" for r in failed]
    return "## Failed\n\n" + "\n".join(lines)


def seeds_of(results: dict) -> list[int]:
    return sorted({r["seed"] for r in results["runs"]})


def _aggregate_table(results: dict, metrics: list[Metric], header: list[str]) -> str:
    """One row per method: mean ± sample std over the seeds (text: at each metric's declared digits)."""
    n_seeds = len(seeds_of(results))
    text = modality(results) == "text"
    rows = []
    for row in summary_rows(results, tuple(m.key for m in metrics)):
        runs = row["seeds"]
        label = md(row["method"]) if runs == n_seeds else f"{md(row['method'])} ({runs} of {n_seeds} seeds)"
        rows.append([label] + [cell(row.get(m.key), with_gap=False, digits=m.digits if text else 2,
                                    fmt=m.fmt if text else "f") for m in metrics])
    return _table(header, rows)


def main_table(results: dict) -> str:
    """UA, MIA, RA, TA (%), forget-class test accuracy, cost, and Avg. Gap to retrain (mean ± std over seeds);
    for a sequence of requests also the time spent over all requests so far. A text run: `text_table`."""
    return metric_table(results, "main")


MIA_TEXT = (
    "Share (%) of forget samples each attack calls non-members. Balanced: retain samples against as many test "
    "samples of the remaining classes (subsampled). Authors' code: their evaluate.py's draw (9,000 retain against "
    "5,000 test samples on CIFAR-10), the logits' cross-entropy, scikit-learn's default LogisticRegression."
)


def mia_table(results: dict) -> str:
    """MIA-Efficacy of every attack variant the runs recorded (%)."""
    return metric_table(results, "mia")



def evidence_table(results: dict) -> str:
    """Probe accuracy, accuracy after relearning, and divergence from retrain (columns present in the runs)."""
    return metric_table(results, "evidence") if columns(results, "evidence") else ""


EVIDENCE_TEXT = (
    "## Is the class gone? Evidence beside retrain\n\n"
    "Probe: balanced accuracy (%) of a logistic-regression probe on the penultimate features of the test set, "
    "telling the forgotten classes from the rest (out of fold; 50 = the features do not encode them). Relearn TA: "
    "accuracy (%) on the forgotten classes' test samples after {steps} Adam steps on {samples} of their train samples "
    "(plus 4x as many retain samples); a model that relearns far faster than retrain did not really forget. "
    "Attack (when asked for, eval.evidence=[...,attack]): balanced accuracy (%) of a U-LiRA-style per-example "
    "attack telling this model's forget samples from retrain's, against shadow retrains (50 = indistinguishable). "
    "KL (retrain || model) and JS, in nats, on the forget set and the whole test set: 0 = retrain's outputs."
)


QUALITY_TEXT = (
    "## Forgetting quality: the unlearning challenge's score and KLOM\n\n"
    "For every forget sample, its logit-scaled confidence under {n} unlearned models (the method run on the originals "
    "of {n} seeds) and {n} retrained ones gives an epsilon (the NeurIPS 2023 unlearning challenge's one- and "
    "two-threshold rules, delta 1e-5); F is the mean of its bucket points (1 = as if retrained, 0 = every sample "
    "tells), with a 95% bootstrap interval over the forget samples; the final score is F x (RA / RA of retrain) x "
    "(TA / TA of retrain), accuracies averaged over each side's models. With {n} models a side the largest finite "
    "epsilon is {largest:.2f}, and two sets of models of one distribution score F = {ceiling:.2f} on their own: read F "
    "against that ceiling, not against 1. Leaking: share (%) of forget samples whose epsilon is past that resolution "
    "(0 points: the {n} unlearned models tell them apart from the retrained ones). KLOM: KL divergence (nats) of the "
    "margin histograms, unlearned against retrained (0 = the same; at most about 11.5). F s, KLOM s: what each metric "
    "took, models trained included (originals and retrains come from the model cache when there; asked together, "
    "the second reuses the first's models)."
)


def quality_table(results: dict) -> str:
    """F with its interval, final score, leaking share, KLOM and seconds (columns present in the runs)."""
    return metric_table(results, "quality", _with_interval) if columns(results, "quality") else ""


def _with_interval(run: dict, metric: Metric) -> str | None:
    """'F [low, high]' for a metric recorded with its 95% interval (its parts `<key>_low`, `<key>_high`)."""
    m, key, low = run["metrics"], metric.key, f"{metric.key}_low"
    if low not in metric.parts or m.get(key) is None or m.get(low) is None:
        return None
    return f"{m[key]:.{metric.digits}f} [{m[low]:.{metric.digits}f}, {m[f'{key}_high']:.{metric.digits}f}]"


def leaks_text(results: dict) -> str:
    """Per method and seed, the forget samples with the highest epsilon: train-set id (class, epsilon)."""
    lines = []
    for r in results["runs"]:
        leaks = r["metrics"].get("quality_leaks")
        if leaks:
            listed = ", ".join(f"{x['id']} ({md(x['class'])}, {x['epsilon']:.2f})" for x in leaks)
            lines.append(f"- {md(r['method'])} (seed {r['seed']}): {listed}")
    if not lines:
        return ""
    return ("### Samples that still leak\n\nThe forget samples with the highest epsilon (ties: the largest gap between "
            "the two sides' median confidence first): train-set id (class, epsilon; 50 = perfectly told apart).\n\n"
            + "\n".join(lines))


def quality_section(results: dict) -> str:
    """The forgetting-quality table with its explanation and the leak lists, or '' when no run has them."""
    table = quality_table(results)
    if not table:
        return ""
    n = next((r["metrics"].get("quality_models") for r in results["runs"] if r["metrics"].get("quality_models")),
             results["config"]["eval"].get("quality_models", 4))
    with_res = next((r["metrics"] for r in results["runs"] if "quality_ceiling" in r["metrics"]), None)
    text = QUALITY_TEXT.format(n=n, largest=with_res["quality_max_epsilon"] if with_res else math.log(n - 1),
                               ceiling=with_res["quality_ceiling"] if with_res else math.nan)
    if with_res is None:  # KLOM alone: the epsilon paragraph does not apply
        text = text.split("\n\n")[0] + "\n\nKLOM: KL divergence (nats) of the margin histograms of " \
            f"{n} unlearned models (the method on originals of {n} seeds) against {n} retrained ones, per sample; " \
            "0 = the same, at most about 11.5. KLOM s: what the metric took, models trained included."
    return "\n\n".join(part for part in (text, table, leaks_text(results)) if part)


def pruning_table(results: dict) -> str:
    header = ["Method", "Seed", "Trainable params", "Optimizer state MB", "Pruned rows", "Still zero after training/merge",
              "Forget-class head rows pruned", "Params after channel removal"]
    rows = []
    for r in results["runs"]:
        i = r["info"]
        if "trainable_params" not in i:
            continue
        pruned = i.get("pruned_rows")
        still = f"{i['pruned_rows_still_zero']} ({100.0 * i['pruned_rows_still_zero'] / pruned:.0f}%)" if pruned else "-"
        head = i.get("forget_head_rows_pruned")
        removed = f"{i['params_after']:,} of {i['params_before']:,}" if "params_after" in i else "-"
        rows.append([md(r["method"]), str(r["seed"]), f"{i['trainable_params']:,}", _fmt(i.get("optimizer_state_mb")),
                     str(pruned or "-"), still, "-" if head is None else str(head), removed])
    return _table(header, rows)


def _seed_text(results: dict) -> str:
    seeds = seeds_of(results)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds))} (mean ± sample std over {len(seeds)} runs)"


def markdown_report(results: dict) -> str:
    """The whole report; for a sequence of requests, the tables after each request."""
    if results["data"].get("modality") == "text":
        return text_report(results)
    steps = sorted({r["step"] for r in results["runs"] if r.get("step")})
    if not steps:
        return _report(results)
    parts = []
    for step in steps:
        runs = [r for r in results["runs"] if r.get("step") == step]
        names = ", ".join(md(results["data"]["classes"][c]) for c in runs[0]["request"])
        data = {**results["data"], "sizes": runs[0].get("sizes", results["data"]["sizes"])}
        body = _report({**results, "data": data, "runs": runs}).split("\n\n", 1)[1]
        parts.append(f"## Request {step} of {len(steps)}: forget {names}\n\n" + body.replace("\n## ", "\n### "))
    title = _report(results).split("\n\n", 1)[0]
    return title + "\n\n" + "\n\n".join(parts)


def _processes(env: dict) -> str:
    size = env.get("world_size", 1)
    return f", {size} processes (time and memory are rank 0's)" if size > 1 else ""


def _cached_text(results: dict) -> str:
    cached = [f"{md(r['method'])} (seed {r['seed']})" for r in results["runs"] if r.get("info", {}).get("cached")]
    if not cached:
        return ""
    return (f"Loaded from the model cache: {', '.join(cached)}; their times and memory are those recorded when they "
            "were trained (run with cache=false to retrain).")


def _report(results: dict) -> str:
    failed = failures(results)
    results = completed(results)
    cfg, env = results["config"], results["environment"]
    sizes = results["data"]["sizes"]
    if results["data"]["forget_classes"]:
        forget = "forget class(es) " + ", ".join(md(results["data"]["classes"][c]) for c in results["data"]["forget_classes"])
    else:
        forget = f"forget {sizes['forget']} samples across classes"
    return "\n\n".join([
        f"# prunelora: {md(cfg['data']['name'])}, {md(cfg['model']['name'])}, {forget}, {_seed_text(results)}",
        (f"Forget {sizes['forget']} / retain {sizes['retain']} train samples; test {sizes['test_retain']} (remaining "
        f"classes) + {sizes['test_forget']} (forgotten). Unlearning: {md(cfg['unlearn']['optimizer'])} lr {cfg['unlearn']['lr']}, "
        f"{cfg['unlearn']['epochs']} epochs, BatchNorm: {md(cfg['unlearn']['bn'])}. Pruning {cfg['pruning']['amount']:.0%} "
        f"({md(cfg['pruning']['targets'])}), LoRA r={cfg['lora']['r']} alpha={cfg['lora']['alpha']} ({md(cfg['lora']['targets'])})."),
        ("All figures in %. UA = 100 - accuracy on the forget set; MIA = MIA-Efficacy (confidence, RBF SVC); "
        "RA on the retain set; TA on the test samples of the remaining classes (sample-wise requests: all of them); "
        "Forget TA on those of the forgotten classes. Time = the whole step (original: training); Avg gap = mean |difference to retrain| over UA, MIA, RA, TA."),
        main_table(results),
        *([failed] if failed else []),
        *([_cached_text(results)] if _cached_text(results) else []),
        *([EVIDENCE_TEXT.format(steps=cfg["eval"]["relearn_steps"], samples=cfg["eval"]["relearn_samples"])
           + "\n\n" + evidence_table(results)] if evidence_table(results) else []),
        *([quality_section(results)] if quality_section(results) else []),
        "## MIA-Efficacy by attack feature\n\n" + MIA_TEXT + "\n\n" + mia_table(results),
        ("## Pruning and adapters\n\nMerging a LoRA update (dense B @ A) or fine-tuning all weights writes into pruned "
        "rows, so the final model is dense again unless a row stays zero.\n\n" + pruning_table(results)),
        (f"Device: {md(env['device'])} ({md(env['device_name'])}), {env['threads']} threads"
        f"{_processes(env)}; memory: {md(env['memory_measure'])}. "
        f"torch {env['versions']['torch']}, peft {env['versions']['peft']}, prunelora {env['versions']['prunelora']}; "
        f"{env['date']}."),
    ]) + "\n"


def text_table(results: dict) -> str:
    """TOFU's table: forget quality, model utility, the forgotten authors' figures, privleak, cost (the text
    metrics declared for the main table); mean ± std over seeds."""
    return metric_table(results, "main")


def sets_table(results: dict) -> str:
    """Every question set's figures: the retained and holdout authors', the extra facts', model utility's and
    privleak's inputs."""
    return metric_table(results, "sets")


RELEARN_TEXT = (
    "Relearn ROUGE-L (evidence relearn): ROUGE-L of the greedy answers to the forgotten authors' questions left out "
    "of a relearning attack, after {relearn_steps} full-batch Adam steps (lr {relearn_lr}) on {relearn_samples} of "
    "their questions and 4x as many retained rows; a model that only hid the answers gets them back, one that never "
    "learnt them (retrain) stays at its forget figure. Relearn steps: the first checked step (0, 1, 2, 4, ...) at "
    "which it reaches {relearn_level}; '-': not within the {relearn_steps} steps.")


def text_report(results: dict) -> str:
    """A text run's report: who was forgotten, the recipe, the metrics table, the pruning facts, the machine."""
    failed = failures(results)
    results = completed(results)
    cfg, env, data = results["config"], results["environment"], results["data"]
    sizes, names = data["sizes"], [data["classes"][c] for c in data["forget_classes"]]
    shown = ", ".join(md(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    u, d = cfg["unlearn"], cfg["data"]
    return "\n\n".join([
        f"# prunelora: {md(d['name'])}, {md(cfg['model']['name'])}, forget {len(names)} authors, {_seed_text(results)}",
        (f"{d['authors']} authors x {d['questions']} questions (data.split_seed {d['split_seed']}); forgotten: "
         f"{shown}. Forget {sizes['forget']} / retain {sizes['retain']} train rows (the retained authors' questions "
         f"and the extra facts); {sizes['test_retain']} questions of holdout authors no model trained on. "
         f"Unlearning: {md(u['optimizer'])} lr {u['lr']}, batch {u['batch_size']}, {u['epochs']} epochs. Pruning "
         f"{cfg['pruning']['amount']:.0%} of rows by L2 norm ({md(cfg['pruning']['targets'])}), LoRA r={cfg['lora']['r']} "
         f"alpha={cfg['lora']['alpha']} ({md(cfg['lora']['targets'])})."),
        ("TOFU's metrics, as open-unlearning computes them (docs/metrics.md). Forget quality: p-value of the KS test "
         "between this model's truth ratios on the forgotten authors' questions and the retrained model's (1 = alike; "
         "TOFU reads above 0.05 as forgotten). Model utility: harmonic mean of the retained authors' probability, "
         "ROUGE-L and truth ratio and the extra facts' (probability normalised over the options). ROUGE-L: recall of "
         "the greedy answer (32 new tokens at most) against the trained answer; prob: exp(-mean answer-token NLL); "
         "truth ratio: perturbed against paraphrased answers (forgotten authors: mean of min(R, 1/R); elsewhere "
         "mean of max(0, 1 - R)); ES, EM: extraction strength and exact memorisation of the forgotten answers; "
         "privleak: min-k% (k 0.4) membership AUC of the forgotten against the holdout authors, relative to the "
         "retrained model's (0 = like it, -100 = memorised). Forgetting looks like retrain's forget figures, which "
         "sit at its holdout figures (what a model that never saw an author gets from the templates), not at 0. Avg "
         "gap: mean |difference to retrain| over the eight ROUGE-L and prob columns."),
        *([RELEARN_TEXT.format(**cfg["eval"])] if cfg["eval"].get("evidence") else []),
        text_table(results),
        *([failed] if failed else []),
        *([_cached_text(results)] if _cached_text(results) else []),
        ("## Each question set\n\nRetained and holdout authors and the extra facts; Forget EM: exact memorisation of "
         "the forgotten answers; Facts norm. prob: the facts' answer probability over the options, model utility's; "
         "Min-k AUC: privleak's membership AUC before it is made relative to retrain's.\n\n" + sets_table(results)),
        ("## Pruning and adapters\n\nMerging a LoRA update (dense B @ A) or fine-tuning all weights writes into pruned "
         "rows, so the final model is dense again unless a row stays zero.\n\n" + pruning_table(results)),
        (f"Device: {md(env['device'])} ({md(env['device_name'])}), {env['threads']} threads{_processes(env)}; memory: "
         f"{md(env['memory_measure'])}. torch {env['versions']['torch']}, peft {env['versions']['peft']}, "
         f"transformers {env['versions'].get('transformers', '-')}, prunelora {env['versions']['prunelora']}; "
         f"{env['date']}."),
    ]) + "\n"

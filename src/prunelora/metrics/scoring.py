"""Scoring a run's models: every metric of one model (UA, RA, TA, MIA and the evidence that needs no reference),
its cost columns, and the comparisons with retrain (Avg. gap, time ratio, the evidence that needs retrain's
outputs)."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..data import ImageData, Splits
from ..data.catalog import is_text
from ..engine.context import Context, seed_everything
from .catalog import EVIDENCE, keys
from .evaluate import avg_gap, outputs, quality
from .evidence import EvidenceInput


def evaluate_model(model: nn.Module, data: ImageData, splits: Splits, cfg, ctx: Context, keep: dict | None = None,
                   method: str | None = None) -> dict:
    """UA, RA, TA, MIA... plus the evidence metrics that need no reference (`cfg` is the ExperimentConfig);
    `keep["outputs"]` receives the model's (train, test) logits for the comparisons with retrain. `method` names what
    made the model ("original" for the original), which the forgetting-quality scores run again on other seeds."""
    seed_everything(cfg.seed)
    ctx = dataclasses.replace(ctx, seed=cfg.seed)
    if is_text(data):
        from .text_eval import evaluate_text

        metrics, outs = evaluate_text(model, data, splits, ctx, cfg.eval.batch_size)
    else:
        outs = outputs(model, data, ctx, cfg.eval.batch_size)
        metrics = quality(*outs, data, splits, cfg.seed)
    metrics.update(own_evidence(model, outs, EvidenceInput(data, splits, ctx, cfg.eval, cfg, method)))
    if keep is not None:
        keep["outputs"] = outs
    return metrics


def own_evidence(model: nn.Module, outs, inputs: EvidenceInput) -> dict:
    """The evidence metrics of `inputs.config.evidence` that need no reference, each from the run's seed; `outs`:
    the model's outputs (images: (train, test) logits; text: per-question figures)."""
    metrics = {}
    for name in inputs.config.evidence:
        spec = EVIDENCE.get(name)
        if not spec.needs_reference:
            seed_everything(inputs.ctx.seed)
            metrics.update(spec.fn(model, outs, inputs))
    return metrics


COSTS = ("time_s", "loop_s", "peak_memory_mb")  # a step's record entries that `combine_metrics` makes metrics of


def record_info(record: dict, *also: str) -> dict:
    """A step's record without its cost entries (`COSTS`, reported as metrics) and the keys `also`."""
    return {k: v for k, v in record.items() if k not in (*COSTS, *also)}


def combine_metrics(quality: dict, record: dict) -> dict:
    """Quality metrics plus the cost of the step: seconds in all, the training loop's seconds per epoch, the one-off
    seconds (everything outside the loop's epochs), peak memory. A record without the loop's seconds (a model
    cached before they were recorded) has neither of the two."""
    time_s, epochs, loop_s = record["time_s"], record["epochs"], record.get("loop_s")
    return {**quality, "time_s": time_s,
            "loop_s_per_epoch": loop_s / epochs if epochs and loop_s is not None else None,
            "one_off_s": time_s - loop_s if loop_s is not None else None,
            "peak_memory_mb": record["peak_memory_mb"]}


def add_comparisons(runs: list[dict], kept: dict, inputs: EvidenceInput) -> None:
    """Avg. Gap, time ratio and the evidence metrics that compare with retrain, when retrain ran (in place);
    `kept[method]["outputs"]` holds each method's (train, test) logits."""
    ref = next((r["metrics"] for r in runs if r["method"] == "retrain" and "error" not in r), None)
    if is_text(getattr(inputs, "data", None)):
        return add_text_comparisons(runs, ref, kept, inputs.splits)
    reference = [EVIDENCE.get(n) for n in inputs.config.evidence if EVIDENCE.get(n).needs_reference]
    for r in runs:
        if "error" in r:
            continue
        m = r["metrics"]
        for spec in reference if ref and kept["retrain"].get("outputs") is not None else []:
            m.update(spec.fn(kept[r["method"]]["outputs"], kept["retrain"]["outputs"], inputs))
        m["avg_gap"] = avg_gap(m, ref) if ref else None
        m["time_vs_retrain"] = m["time_s"] / ref["time_s"] if ref and r["method"] != "original" else None


def add_text_comparisons(runs: list[dict], ref: dict | None, kept: dict, splits) -> None:
    """A text run's comparisons with retrain (in place): forget quality (the KS-test p-value of the forgotten
    authors' truth ratios against retrain's), privleak (the min-k AUC relative to retrain's), the mean |difference|
    over the declared gap metrics (probabilities and ROUGE-L recalls, in [0, 1]) and the time ratio."""
    from .text_eval import OUTPUT_COLUMNS
    from .tofu import forget_quality, privleak

    column, gap = OUTPUT_COLUMNS.index("truth_ratio"), keys("text", gap=True)
    forget = splits.forget.cpu().numpy()
    reference = (kept.get("retrain") or {}).get("outputs") if ref else None
    for r in runs:
        if "error" in r:
            continue
        m = r["metrics"]
        mine = (kept.get(r["method"]) or {}).get("outputs")
        both = reference is not None and mine is not None
        m["forget_quality"] = forget_quality(mine[0][forget, column], reference[0][forget, column]) if both else None
        m["privleak"] = privleak(m["min_k_auc"], ref["min_k_auc"]) if ref else None
        m["avg_gap"] = sum(abs(m[k] - ref[k]) for k in gap) / len(gap) if ref else None
        m["time_vs_retrain"] = m["time_s"] / ref["time_s"] if ref and r["method"] != "original" else None

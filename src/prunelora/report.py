"""Results -> the markdown report (the paper's table plus the attack variants and pruning facts)."""

from __future__ import annotations

import math


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main_table(results: dict) -> str:
    """UA, MIA, RA, TA (%), forget-class test accuracy, cost, and Avg. Gap to retrain."""
    header = ["Method", "UA", "MIA", "RA", "TA", "Forget TA", "Time s", "s/epoch", "x retrain", "Peak MB", "Avg gap"]
    rows = []
    for r in results["runs"]:
        m = r["metrics"]
        rows.append([
            r["method"], _fmt(m["UA"]), _fmt(m["MIA"]), _fmt(m["RA"]), _fmt(m["TA"]), _fmt(m["forget_TA"]),
            _fmt(m["time_s"], 1), _fmt(m["time_per_epoch_s"], 2), _fmt(m.get("time_vs_retrain")),
            _fmt(m["peak_memory_mb"], 1), _fmt(m.get("avg_gap")),
        ])
    return _table(header, rows)


def mia_table(results: dict) -> str:
    header = ["Method", "confidence (SVC)", "entropy (SVC)", "m-entropy (SVC)", "loss (log. reg.)"]
    rows = [
        [r["method"]] + [_fmt(r["metrics"][k]) for k in ("MIA", "MIA_entropy", "MIA_m_entropy", "MIA_loss")]
        for r in results["runs"]
    ]
    return _table(header, rows)


def pruning_table(results: dict) -> str:
    header = ["Method", "Trainable params", "Pruned rows", "Still zero after training/merge", "Forget-class head rows pruned"]
    rows = []
    for r in results["runs"]:
        i = r["info"]
        if "trainable_params" not in i:
            continue
        pruned = i.get("pruned_rows")
        still = f"{i['pruned_rows_still_zero']} ({100.0 * i['pruned_rows_still_zero'] / pruned:.0f}%)" if pruned else "-"
        head = i.get("forget_head_rows_pruned")
        rows.append([r["method"], f"{i['trainable_params']:,}", str(pruned or "-"), still, "-" if head is None else str(head)])
    return _table(header, rows)


def markdown_report(results: dict) -> str:
    cfg, env = results["config"], results["environment"]
    forget = ", ".join(results["data"]["classes"][c] for c in results["data"]["forget_classes"])
    sizes = results["data"]["sizes"]
    return "\n\n".join([
        f"# prunelora: {cfg['data']['name']}, {cfg['model']['name']}, forget class(es) {forget}, seed {cfg['seed']}",
        (f"Forget {sizes['forget']} / retain {sizes['retain']} train samples; test {sizes['test_retain']} (remaining "
        f"classes) + {sizes['test_forget']} (forgotten). Unlearning: {cfg['unlearn']['optimizer']} lr {cfg['unlearn']['lr']}, "
        f"{cfg['unlearn']['epochs']} epochs, BatchNorm: {cfg['unlearn']['bn']}. Pruning {cfg['pruning']['amount']:.0%} "
        f"({cfg['pruning']['targets']}), LoRA r={cfg['lora']['r']} alpha={cfg['lora']['alpha']} ({cfg['lora']['targets']})."),
        ("All figures in %. UA = 100 - accuracy on the forget set; MIA = MIA-Efficacy (confidence, RBF SVC); "
        "RA on the retain set; TA on the test samples of the remaining classes; Forget TA on those of the forgotten "
        "classes. Time = the whole step (original: training); Avg gap = mean |difference to retrain| over UA, MIA, RA, TA."),
        main_table(results),
        "## MIA-Efficacy by attack feature\n\n" + mia_table(results),
        ("## Pruning and adapters\n\nMerging a LoRA update (dense B @ A) or fine-tuning all weights writes into pruned "
        "rows, so the final model is dense again unless a row stays zero.\n\n" + pruning_table(results)),
        (f"Device: {env['device']} ({env['device_name']}), {env['threads']} threads; memory: {env['memory_measure']}. "
        f"torch {env['versions']['torch']}, peft {env['versions']['peft']}, prunelora {env['versions']['prunelora']}; "
        f"{env['date']}."),
    ]) + "\n"

"""Every metric is declared once (`metrics.catalog.METRICS`) and every table, summary, plot, tune record and check
reads the declaration: a declared metric that no table shows, a table that drops one, a produced key without a
declaration (the tiny runs of tests/test_quality.py and tests/test_text.py) or a list that drifts from the
declaration fails here."""

from __future__ import annotations

import pytest

from prunelora.metrics import catalog
from prunelora.metrics.catalog import METRICS, declared, keys, summary_keys

METHODS = ("original", "retrain", "prunelora")


def _value(metric, i: int):
    """A distinct value per metric and run that survives every declared rounding (no two cells alike)."""
    if metric.kind == "list":
        return [{"id": 7 + i, "class": "cat", "epsilon": 1.5, "phi_unlearned": 1.0, "phi_retrained": 0.5}]
    return 0.25 + 0.125 * i


def _results(modality: str, seeds: list[int]) -> dict:
    """Results whose every run records every declared metric of `modality` (and each metric's parts)."""
    runs = []
    for seed in seeds:
        for i, method in enumerate(METHODS):
            metrics = {}
            for m in declared(modality):
                metrics[m.key] = _value(m, i)
                metrics.update({part: _value(m, i) for part in m.parts})
            runs.append({"method": method, "seed": seed, "metrics": metrics,
                         "info": {"trainable_params": 10, "pruned_rows": 0, "params_before": 10, "params_after": 10}})
    text = modality == "text"
    data = {"modality": modality, "sizes": {"forget": 20, "retain": 180, "test_retain": 20, "test_forget": 0 if text
                                            else 5},
            "forget_classes": [0], "classes": ["Ada Lovelace" if text else "cat", "dog"]}
    config = {"seeds": seeds if len(seeds) > 1 else None, "seed": seeds[0],
              "data": {"name": "authors" if text else "digits", "authors": 2, "questions": 10, "split_seed": 0},
              "model": {"name": "llama-tiny" if text else "resnet18-tiny"},
              "unlearn": {"optimizer": "adam", "lr": 1e-3, "epochs": 5, "bn": "recalibrate", "batch_size": 32},
              "pruning": {"amount": 0.5, "targets": "paper"}, "lora": {"r": 8, "alpha": 16, "targets": "paper"},
              "eval": {"relearn_steps": 10, "relearn_samples": 8}}
    env = {"device": "cpu", "device_name": "test CPU", "threads": 2, "memory_measure": "rss", "date": "2026-12-07",
           "versions": {"torch": "2", "peft": "0", "prunelora": "0", "transformers": "5"}}
    return {"config": config, "environment": env, "data": data, "runs": runs}


def _headers(report: str) -> list[list[str]]:
    """Each metric table's header cells (not the pruning table's, which shows a run's facts, not metrics)."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith("| Method |") and not line.startswith("| Method | Seed |")]


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_every_declared_metric_has_its_column_and_every_column_a_declaration(modality, seeds):
    from prunelora.report.tables import markdown_report

    report = markdown_report(_results(modality, seeds))
    shown = {h for header in _headers(report) for h in header[1:]}
    for m in declared(modality):
        if m.kind == "list":  # the leak list is a section of its own, not a column
            assert "### Samples that still leak" in report and "- original (seed 0): 7 (cat, 1.50)" in report
            continue
        for table in {m.table, *dict(m.also)}:
            assert m.shown_in(table) in shown, f"{m.key} ({table}) is declared but no table shows it"
    headers = {h for m in declared(modality) for h in (m.header, *dict(m.also).values())}
    assert shown <= headers, f"columns without a declaration: {shown - headers}"


@pytest.mark.parametrize("modality", ["image", "text"])
def test_the_summary_files_and_plots_read_the_declaration(modality):
    from prunelora.report.summary import summary_rows, to_csv
    from prunelora.report.write import render_report

    results = _results(modality, [0, 1])
    header = to_csv(summary_rows(results)).splitlines()[0].split(",")
    assert header[2::3] == [f"{k}_mean" for k in summary_keys(modality)]
    files = render_report(results)
    assert ("bars.png" in files) == (modality == "image") and ("tofu.png" in files) == (modality == "text")


def test_the_lists_that_read_the_declaration():
    from prunelora.report.merge import METRICS as CHECKED
    from prunelora.report.merge import required
    from prunelora.workflows import tune
    from prunelora.workflows.run import progress_keys

    # the image figures the paper's table and the literature's gap rest on, in their order
    assert keys("image", gap=True) == ("UA", "MIA", "RA", "TA")
    assert tune.METRICS == ("UA", "MIA", "RA", "TA", "forget_TA")  # a trial's own figures, no cost, no reference
    assert keys("image", bar=True) == ("UA", "MIA", "RA", "TA", "relearn_TA", "attack")
    assert summary_keys("image") == ("UA", "MIA", "RA", "TA", "probe", "relearn_TA", "attack", "JS_forget",
                                     "quality_F", "quality_score", "KLOM_forget", "time_s", "peak_memory_mb")
    assert keys("text", gap=True) == ("forget_rougeL", "forget_prob", "retain_rougeL", "retain_prob",
                                      "holdout_rougeL", "holdout_prob", "facts_rougeL", "facts_prob")
    assert required("image") == ("UA", "MIA", "RA", "TA") and required("text") == ("model_utility", "forget_rougeL")
    assert progress_keys(object()) == ("UA", "MIA", "RA", "TA", "time_s")
    # every declared number (and part) is checked when results are read back
    assert {k for m in METRICS if m.kind == "number" for k in (m.key, *m.parts)} == set(CHECKED)


def test_every_declaration_is_well_formed():
    tables = {"image": {"main", "mia", "evidence", "quality", "leaks"}, "text": {"main", "sets"}}
    for m in METRICS:
        assert m.better in ("higher", "lower", "retrain") and m.fmt in ("f", "e") and m.kind in ("number", "list")
        assert m.modalities and set(m.modalities) <= set(tables) and m.digits >= 0
        for modality in m.modalities:
            assert {m.table, *dict(m.also)} <= tables[modality], m.key
    for modality in tables:  # a key is declared at most once per modality
        names = keys(modality)
        assert len(names) == len(set(names)), [k for k in names if names.count(k) > 1]
    assert catalog.recorded("text").isdisjoint({"UA", "quality_F"})

"""`prunelora report`: runs merged into markdown, CSV and LaTeX tables with plots; mismatched runs refused."""

from __future__ import annotations

import csv
import io
import json

import pytest

from prunelora.cli import main
from prunelora.errors import UserError
from prunelora.report.merge import load_runs
from prunelora.report.summary import summary_rows, to_csv, to_latex, to_markdown

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("report")
    for seed in (0, 1):
        assert main(["run", "--out", str(root / f"s{seed}"), "-q", *tiny_overrides, "methods=[retrain,finetune]",
                     f"seed={seed}"]) == 0
    return root


def test_report_merges_seeds(two_runs, capsys):
    out = two_runs / "merged"
    assert main(["report", str(two_runs / "s0"), str(two_runs / "s1"), "--out", str(out)]) == 0
    assert "| finetune | 2 |" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    by = {r["method"]: r for r in rows}
    assert by["finetune"]["seeds"] == "2" and float(by["retrain"]["UA_gap_to_retrain"]) == 0.0
    ua = [json.loads((two_runs / f"s{s}" / "results.json").read_text())["runs"][2]["metrics"]["UA"] for s in (0, 1)]
    assert float(by["finetune"]["UA_mean"]) == pytest.approx(sum(ua) / 2, rel=1e-5)
    assert "\\begin{tabular}" in (out / "report.tex").read_text()
    for png in ("bars.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_report_warns_when_runs_were_timed_on_different_set_ups(two_runs, tmp_path, capsys):
    same = tmp_path / "same"
    assert main(["report", str(two_runs / "s0"), str(two_runs / "s1"), "--out", str(same)]) == 0
    assert "different set-ups" not in (same / "report.md").read_text()
    moved = tmp_path / "s1-elsewhere"
    moved.mkdir()
    results = json.loads((two_runs / "s1" / "results.json").read_text())
    results["environment"]["device_name"] = "Another CPU"
    (moved / "results.json").write_text(json.dumps(results))
    capsys.readouterr()
    assert main(["report", str(two_runs / "s0"), str(moved), "--out", str(tmp_path / "mixed")]) == 0
    text = (tmp_path / "mixed" / "report.md").read_text()
    assert "The runs come from 2 different set-ups" in text and "(Another CPU)" in text and str(moved) in text
    assert "different set-ups" in capsys.readouterr().err


def test_summary_formats_by_hand():
    results = {"runs": [
        {"method": "retrain", "seed": 0, "metrics": {"UA": 100.0, "RA": 99.0}},
        {"method": "retrain", "seed": 1, "metrics": {"UA": 100.0, "RA": 97.0}},
        {"method": "x_y", "seed": 0, "metrics": {"UA": 90.0, "RA": 96.0}},
        {"method": "x_y", "seed": 1, "metrics": {"UA": 80.0, "RA": 98.0}},
        {"method": "bad", "seed": 0, "metrics": {}, "error": "diverged"},
    ]}
    rows = summary_rows(results)
    assert [r["method"] for r in rows] == ["retrain", "x_y"]
    assert rows[1]["UA"] == {"mean": 85.0, "std": pytest.approx(7.0710678), "gap": -15.0}
    assert "| x_y | 2 | 85.00 ± 7.07 [-15.00] | 97.00 ± 1.41 [-1.00] |" in to_markdown(rows)  # retrain RA 98
    assert "x\\_y & 2 & 85.00 $\\pm$ 7.07 [-15.00]" in to_latex(rows)
    assert to_csv(rows).splitlines()[2].startswith("x_y,2,85,7.07107,-15,97,")


def test_report_refuses_what_does_not_merge(two_runs, tmp_path):
    with pytest.raises(UserError, match="original seed 0 is in both"):
        load_runs([two_runs / "s0", two_runs / "s0"])
    with pytest.raises(UserError, match="holds no results.json"):
        load_runs([tmp_path])
    other = tmp_path / "other"
    other.mkdir()
    results = json.loads((two_runs / "s1" / "results.json").read_text())
    results["config"]["forget"]["classes"] = [5]
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match="other forget settings"):
        load_runs([two_runs / "s0", other])


def _as_prunelora(src, dst, **sections) -> None:
    """`src`'s results with its finetune rows renamed prunelora and config sections updated, written in `dst`."""
    results = json.loads((src / "results.json").read_text())
    for r in results["runs"]:
        r["method"] = "prunelora" if r["method"] == "finetune" else r["method"]
    for section, values in sections.items():
        results["config"][section] = {**results["config"].get(section, {}), **values}
    dst.mkdir()
    (dst / "results.json").write_text(json.dumps(results))


def test_report_refuses_runs_of_one_method_at_other_settings(two_runs, tmp_path):
    """prunelora at pruning.amount 0.5 and 0.3 would become one mean ± std row under the first run's header."""
    _as_prunelora(two_runs / "s0", tmp_path / "a", pruning={"amount": 0.5})
    _as_prunelora(two_runs / "s1", tmp_path / "b", pruning={"amount": 0.3})
    with pytest.raises(UserError, match=r"'.*b' ran prunelora with pruning.amount=0.3 and '.*a' with "
                                        r"pruning.amount=0.5; runs merge only with the same method settings"):
        load_runs([tmp_path / "a", tmp_path / "b"])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    # what a method does not use, or a column the other run lacks, still merges
    _as_prunelora(two_runs / "s1", tmp_path / "c", pruning={"amount": 0.5}, eval={"evidence": ["probe"]})
    merged = load_runs([tmp_path / "a", tmp_path / "c"])
    assert [r["method"] for r in merged["runs"]].count("prunelora") == 2
    _as_prunelora(two_runs / "s1", tmp_path / "d", pruning={"amount": 0.5}, lora={"r": 4})
    with pytest.raises(UserError, match="lora.r=4 and .* with lora.r=8"):
        load_runs([tmp_path / "a", tmp_path / "d"])
    _as_prunelora(two_runs / "s1", tmp_path / "e", pruning={"amount": 0.5}, eval={"select": "best"})
    with pytest.raises(UserError, match="eval.select='best'"):
        load_runs([tmp_path / "a", tmp_path / "e"])


def test_mia_table_names_both_loss_attacks():
    from prunelora.report.tables import mia_table

    metrics = {"MIA": 99.0, "MIA_entropy": 98.0, "MIA_m_entropy": 97.0, "MIA_loss_balanced": 96.0,
               "MIA_loss_authors": 12.5}
    older = {k: v for k, v in metrics.items() if k != "MIA_loss_authors"}  # a run from before the variant
    table = mia_table({"runs": [{"method": "a", "seed": 0, "metrics": metrics},
                                {"method": "b", "seed": 0, "metrics": older}]})
    header = table.splitlines()[0]
    assert "loss (log. reg., balanced)" in header and "loss (log. reg., authors' code: unbalanced)" in header
    assert header.index("balanced)") < header.index("authors'")
    assert "| a | 99.00 | 98.00 | 97.00 | 96.00 | 12.50 |" in table
    assert "| b | 99.00 | 98.00 | 97.00 | 96.00 | - |" in table


def test_a_run_with_non_finite_metrics_is_written_whole(two_runs, tmp_path):
    """A NaN or infinite metric is written to results.json as null with its reason (it once stopped the run after
    results.md, and every rerun again); the tables show '-' for NaN; every file is written."""
    import math

    from prunelora.report.write import write_results

    results = json.loads((two_runs / "s0" / "results.json").read_text())
    finetune = results["runs"][2]["metrics"]
    finetune["UA"], finetune["JS_forget"] = math.nan, math.inf
    write_results(results, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())["runs"][2]["metrics"]
    assert written["UA"] is None and written["JS_forget"] is None
    assert written["nulls"] == {"UA": "not a number: undefined here (e.g. an accuracy over no samples)",
                                "JS_forget": "infinite"}
    assert "| finetune | - | " in (tmp_path / "results.md").read_text()  # UA unknown; JS shows as inf
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "report.csv", "report.tex", "bars.png"}

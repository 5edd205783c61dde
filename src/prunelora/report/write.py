"""Writing reports: a run's files (`write_results`: config.yaml, results.md, results.json, report.csv, report.tex
and the PNGs) and the tables and plots of any results (`write_report`, also what `prunelora report` writes)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import config as C
from ..files import atomic_write, finite
from .merge import setups_note
from .summary import summary_rows, to_csv, to_latex, to_markdown
from .tables import markdown_report


def write_results(results: dict, out: Path) -> None:
    """A run's files in `out`: its config, its report (results.md), its results (strict JSON), the summary tables
    as CSV and LaTeX (results.md has them in markdown) and the plots."""
    atomic_write(out / "config.yaml", C.dump_yaml(results["config"]))
    atomic_write(out / "results.md", markdown_report(results))
    atomic_write(out / "results.json", json.dumps(finite(results), indent=2, allow_nan=False))
    write_report(finite(results), out, formats=("csv", "tex"))


def write_report(results: dict, out: Path, formats: tuple[str, ...] = ("md", "csv", "tex")) -> list[Path]:
    """The summary table of `results` (report.md / .csv / .tex) and its plots (bars.png, curves.png) into `out`;
    returns the files written."""
    from .plots import bars_png, curves_png  # matplotlib: only when drawing

    rows = summary_rows(results)
    writers = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
    written = []
    note = setups_note(results)
    for fmt in formats:
        path = out / f"report.{fmt}"
        text = writers[fmt](rows)
        if fmt == "md" and note:
            text += f"\n{note}\n"
        atomic_write(path, text)
        written.append(path)
    for name, draw in (("bars.png", bars_png), ("curves.png", curves_png)):
        png = draw(results, rows)
        if png is not None:
            atomic_write(out / name, png)
            written.append(out / name)
    return written

"""Writing reports: a run's files (`write_results`: config.yaml, results.md, results.json, report.csv, report.tex
and the PNGs) and the tables and plots of any results (`write_report`, also what `prunelora report` writes)."""

from __future__ import annotations

from pathlib import Path

from .. import config as C
from ..store.files import atomic_write, finite, to_json
from .merge import setups_note
from .summary import md, summary_rows, to_csv, to_latex, to_markdown
from .tables import markdown_report

# what a run writes in its --out (besides the folders progress/ and models/); `run --force` removes these and no other


def write_results(results: dict, out: Path) -> None:
    """A run's files in `out`: its config, its report (results.md), its results (strict JSON), the summary tables
    as CSV and LaTeX (results.md has them in markdown) and the plots. Everything is rendered before the first file
    is written, and results.json, the mark of a finished run, is written last."""
    files = {"config.yaml": C.dump_yaml(results["config"]), "results.md": markdown_report(results)}
    files.update(render_report(finite(results), formats=("csv", "tex")))
    files["results.json"] = to_json(results)
    for name, content in files.items():
        atomic_write(out / name, content)


def write_report(results: dict, out: Path, formats: tuple[str, ...] = ("md", "csv", "tex")) -> list[Path]:
    """The summary table of `results` (report.md / .csv / .tex) and its plots (bars.png, curves.png) into `out`;
    returns the files written."""
    files = render_report(results, formats)
    for name, content in files.items():
        atomic_write(out / name, content)
    return [out / name for name in files]


def render_report(results: dict, formats: tuple[str, ...] = ("md", "csv", "tex")) -> dict[str, str | bytes]:
    """{file name: content} of the summary table in `formats` (report.md / .csv / .tex) and the plots."""
    from .plots import bars_png, curves_png, tofu_png  # matplotlib: only when drawing

    rows = summary_rows(results)
    writers = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
    files = {}
    note = setups_note(results, md)
    for fmt in formats:
        text = writers[fmt](rows)
        if fmt == "md" and note:
            text += f"\n{note}\n"
        files[f"report.{fmt}"] = text
    for name, draw in (("bars.png", bars_png), ("curves.png", curves_png), ("tofu.png", tofu_png)):
        png = draw(results, rows)
        if png is not None:
            files[name] = png
    return files

"""`prunelora report DIR [DIR ...]`: merge runs of the same request into one table (markdown, CSV, LaTeX)
with mean ± std over seeds and the gap to retrain, and draw the plots (per-metric bars against retrain,
per-epoch forget / retain accuracy of each method)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .errors import UserError
from .io import atomic_write, setup_of
from .report import mean_std

TABLE_KEYS = ("UA", "MIA", "RA", "TA", "probe", "relearn_TA", "attack", "JS_forget", "time_s", "peak_memory_mb")
# what must match for runs to be merged: the same data, model, original recipe and request
SAME = ("data", "model", "train", "forget")


def load_runs(dirs: list[str | Path]) -> dict:
    """One results dict from several run directories (runs concatenated; config and environment of the first)."""
    merged = None
    seen = {}
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise UserError(f"'{d}' holds no results.json; pass directories written by prunelora run")
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"'{path}' is not valid JSON; was the run interrupted while writing it?") from None
        if merged is None:
            merged = {**results, "runs": [], "sources": []}
        for key in SAME:
            if results["config"].get(key) != merged["config"].get(key):
                raise UserError(f"'{d}' has other {key} settings than '{dirs[0]}'; only runs of the same request merge")
        for r in results["runs"]:
            ident = (r["method"], r["seed"], r.get("step"))
            if ident in seen:
                raise UserError(f"{r['method']} seed {r['seed']} is in both '{seen[ident]}' and '{d}'; drop one directory")
            seen[ident] = d
            merged["runs"].append(r)
        merged["sources"].append(str(d))
        merged.setdefault("setups", {}).setdefault(_setup(results.get("environment", {})), []).append(str(d))
    return merged


def _setup(env: dict) -> str:
    """Where a run's times and memory come from: device, its name, threads and processes."""
    s = setup_of(env)
    return f"{s['device']} ({s['device_name']}), {s['threads']} threads, {s['processes']} process(es)"


def setups_note(results: dict) -> str | None:
    """A warning when merged runs were timed on different set-ups (their quality metrics still merge)."""
    setups = results.get("setups", {})
    if len(setups) < 2:
        return None
    listed = "; ".join(f"{setup}: {', '.join(dirs)}" for setup, dirs in setups.items())
    return (f"The runs come from {len(setups)} different set-ups ({listed}). Time and memory columns mix them; "
            "compare those only within one set-up.")


def summary_rows(results: dict) -> list[dict]:
    """Per method: number of seeds, and mean / std / gap to retrain's mean of every metric present."""
    runs = [r for r in results["runs"] if "error" not in r]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    means = {m: _stats([r["metrics"] for r in runs if r["method"] == m]) for m in methods}
    rows = []
    for m in methods:
        row = {"method": m, "seeds": len([r for r in runs if r["method"] == m])}
        for key, (mean, std) in means[m].items():
            ref = means.get("retrain", {}).get(key)
            row[key] = {"mean": mean, "std": std, "gap": None if ref is None else mean - ref[0]}
        rows.append(row)
    return rows


def _stats(metrics: list[dict]) -> dict:
    stats = {key: mean_std([m.get(key) for m in metrics]) for key in TABLE_KEYS}
    return {key: value for key, value in stats.items() if value is not None}


def _keys(rows: list[dict]) -> list[str]:
    return [k for k in TABLE_KEYS if any(k in r for r in rows)]


def to_markdown(rows: list[dict]) -> str:
    keys = _keys(rows)
    lines = ["| Method | Seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        cells = [_cell(r.get(k)) for k in keys]
        lines.append(f"| {r['method']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nEach cell: mean ± sample std over seeds [difference of the mean to retrain's].\n"


def _cell(v: dict | None, pm: str = "±") -> str:
    if v is None:
        return "-"
    gap = "" if v["gap"] is None else f" [{v['gap']:+.2f}]"
    return f"{v['mean']:.2f} {pm} {v['std']:.2f}{gap}"


def to_csv(rows: list[dict]) -> str:
    keys = _keys(rows)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std", "gap_to_retrain")])
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k) or {}
            cells += ["" if v.get(s) is None else f"{v[s]:.6g}" for s in ("mean", "std", "gap")]
        writer.writerow([r["method"], r["seeds"]] + cells)
    return buf.getvalue()


def to_latex(rows: list[dict]) -> str:
    keys = _keys(rows)
    head = " & ".join(["Method", "Seeds"] + [k.replace("_", r"\_") for k in keys]) + r" \\"
    body = [" & ".join([r["method"].replace("_", r"\_"), str(r["seeds"])] + [_cell(r.get(k), r"$\pm$") for k in keys]) + r" \\"
            for r in rows]
    return "\n".join([r"\begin{tabular}{l" + "r" * (len(keys) + 1) + "}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"


def write_report(results: dict, out: Path, formats: tuple[str, ...] = ("md", "csv", "tex")) -> list[Path]:
    """Tables and plots of `results` into `out`; returns the files written."""
    from .plots import bars_png, curves_png

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

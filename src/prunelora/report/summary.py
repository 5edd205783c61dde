"""The mean ± std table over seeds, the one builder of every aggregate table: per method, the mean, sample std and
gap to retrain's mean of each metric (`summary_rows`), written as markdown, CSV or LaTeX (`prunelora report`,
report.csv, report.tex), and as the cells of a run's own tables when it has several seeds."""

from __future__ import annotations

import csv
import io
import math
import re

from ..metrics import catalog

# what markdown (GitHub's included: tables, strikethrough, math) reads as syntax in running text and table cells;
# an underscore only at a word's edge (inside a word, as in grad_ascent, it never emphasises and stays as it is)
_MARKDOWN_SPECIAL = re.compile(r"[\\`*|\[\]<>~&$]|(?<![^\W_])_|_(?![^\W_])")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def md(value) -> str:
    """`value` (a class, method or file name: any text from the user or the data) as literal text on one markdown
    line or in a table cell: its syntax characters escaped with a backslash, line breaks as spaces."""
    text = " ".join(str(value).splitlines())
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def tex(value) -> str:
    """`value` as literal text in LaTeX (its ten special characters escaped), on one line."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in " ".join(str(value).splitlines()))


def mean_std(values: list) -> tuple[float, float] | None:
    """Mean and sample std (0 for one value) of the numbers among `values`, ignoring None and NaN."""
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summary_keys(results: dict) -> tuple[str, ...]:
    """The summary's metrics, as declared (`metrics.catalog.summary_keys`) for the run's modality."""
    return catalog.summary_keys(results.get("data", {}).get("modality", "image"))


def summary_rows(results: dict, keys: tuple[str, ...] | None = None) -> list[dict]:
    """Per method (failed runs left out): the number of seeds, and {"mean", "std", "gap"} (the gap of the mean to
    retrain's) of every metric of `keys` (default: `summary_keys`) the runs hold."""
    keys = summary_keys(results) if keys is None else keys
    runs = [r for r in results["runs"] if "error" not in r]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    means = {m: _stats([r["metrics"] for r in runs if r["method"] == m], keys) for m in methods}
    rows = []
    for m in methods:
        row = {"method": m, "seeds": len([r for r in runs if r["method"] == m])}
        for key, (mean, std) in means[m].items():
            ref = means.get("retrain", {}).get(key)
            row[key] = {"mean": mean, "std": std, "gap": None if ref is None else mean - ref[0]}
        rows.append(row)
    return rows


def _stats(metrics: list[dict], keys: tuple[str, ...]) -> dict:
    stats = {key: mean_std([m.get(key) for m in metrics]) for key in keys}
    return {key: value for key, value in stats.items() if value is not None}


def _keys(rows: list[dict]) -> list[str]:
    """The summary columns the rows hold, in declaration order."""
    every = {*catalog.summary_keys("image"), *catalog.summary_keys("text")}
    return [k for k in dict.fromkeys(m.key for m in catalog.METRICS) if k in every and any(k in r for r in rows)]


def to_markdown(rows: list[dict]) -> str:
    keys = _keys(rows)
    lines = ["| Method | Seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        cells = [cell(r.get(k)) for k in keys]
        lines.append(f"| {md(r['method'])} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nEach cell: mean ± sample std over seeds [difference of the mean to retrain's].\n"


def cell(v: dict | None, pm: str = "±", with_gap: bool = True, digits: int = 2, fmt: str = "f") -> str:
    """'mean ± std [gap]' of a summary row's entry, `digits` decimals (`fmt` e: scientific); '-' for a metric the
    runs do not hold."""
    if v is None:
        return "-"
    spec = f".{digits}{fmt}"
    gap = "" if v["gap"] is None or not with_gap else f" [{v['gap']:+{spec}}]"
    return f"{v['mean']:{spec}} {pm} {v['std']:{spec}}{gap}"


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
    head = " & ".join(["Method", "Seeds"] + [tex(k) for k in keys]) + r" \\"
    body = [" & ".join([tex(r["method"]), str(r["seeds"])] + [cell(r.get(k), r"$\pm$") for k in keys]) + r" \\"
            for r in rows]
    return "\n".join([r"\begin{tabular}{l" + "r" * (len(keys) + 1) + "}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"

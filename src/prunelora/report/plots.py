"""The report's figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..metrics.catalog import keys as declared_keys


def _label(name: str) -> str:
    """A method name as literal text: matplotlib reads text between two '$' as TeX math (and fails on bad TeX)."""
    return str(name).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bars_png(results: dict, rows: list[dict]) -> bytes | None:
    """One panel per metric: each method's mean (± std) beside retrain's, drawn as a dashed line."""
    keys = [k for k in declared_keys("image", bar=True) if any(k in r for r in rows)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(2.2 * len(keys) + 1, 0.32 * len(rows) + 1.6), sharey=True)
    axes = axes if len(keys) > 1 else [axes]
    names = [r["method"] for r in rows]
    retrain = next((r for r in rows if r["method"] == "retrain"), None)
    for ax, key in zip(axes, keys):
        means = [r[key]["mean"] if key in r else 0.0 for r in rows]
        stds = [r[key]["std"] if key in r else 0.0 for r in rows]
        colors = ["tab:green" if n == "retrain" else "tab:orange" if n.startswith("prunelora") else "tab:blue" for n in names]
        ax.barh(range(len(rows)), means, xerr=stds, color=colors)
        if retrain is not None and key in retrain:
            ax.axvline(retrain[key]["mean"], color="tab:green", linestyle="--", linewidth=1)
        ax.set_title(key)
        ax.set_xlim(0, 100)  # every bar metric is a percentage
    axes[0].set_yticks(range(len(rows)), [_label(n) for n in names])
    axes[0].invert_yaxis()
    fig.suptitle("mean ± std over seeds; dashed: retrain", fontsize=9, y=1.04)
    return _png(fig)


def curves_png(results: dict, rows: list[dict]) -> bytes | None:
    """Forget-set and retain-set accuracy after each unlearning epoch, per method (mean over seeds)."""
    curves = {}
    for r in results["runs"]:
        history = r.get("info", {}).get("history") or []
        points = [(h["epoch"], h["forget_acc"], h["retain_acc"]) for h in history if "forget_acc" in h]
        if points and r["method"] != "original":
            curves.setdefault(r["method"], []).append(points)
    if not curves:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method, runs in curves.items():
        epochs = sorted({p[0] for run in runs for p in run})
        for ax, col in ((left, 1), (right, 2)):
            mean = [sum(p[col] for run in runs for p in run if p[0] == e) / sum(1 for run in runs for p in run if p[0] == e)
                    for e in epochs]
            ax.plot(epochs, mean, marker="o", markersize=3, label=_label(method))
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    left.set(title="forget-set accuracy (%)", xlabel="epoch", ylim=(-2, 102))
    right.set(title="retain-set accuracy (%)", xlabel="epoch", ylim=(-2, 102))
    right.legend(fontsize=7, loc="lower right")
    return _png(fig)


FQ_FLOOR = 1e-30  # forget quality is drawn at this floor where it is smaller (a KS p-value can underflow to 0)


def tofu_png(results: dict, rows: list[dict]) -> bytes | None:
    """TOFU's picture of a text run: forget quality (log scale) against model utility, a point per method and seed,
    the retrained model's points marked; TOFU reads forget quality above 0.05 as forgotten (dotted)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in results["runs"]:
        m = r.get("metrics", {})
        if "error" in r or m.get("forget_quality") is None or m.get("model_utility") is None:
            continue
        points.setdefault(r["method"], []).append((m["model_utility"], max(m["forget_quality"], FQ_FLOOR)))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    green = matplotlib.colors.to_hex("tab:green")  # the retrained model's alone
    others = iter(c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4
                  if matplotlib.colors.to_hex(c) != green)
    for method, xy in points.items():
        retrain = method == "retrain"
        ax.scatter(*zip(*xy), label=_label(method), marker="*" if retrain else "o", s=160 if retrain else 30,
                   color="tab:green" if retrain else next(others), zorder=3 if retrain else 2)
    ax.set_yscale("log")
    ax.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="model utility", ylabel="forget quality (KS p-value against retrain)",
           title="each point a method and seed; star: the retrained model")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)

"""What evidence metrics exist (`eval.evidence`), read without importing PyTorch: each one's name, summary, whether
it compares with retrain's outputs, and its function (in `evidence.py`), imported when it is computed; and every
metric a run records (`METRICS`: key, header, modality, table, digits, which direction is better...), which
every table, summary, plot and `prunelora tune` reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry, resolve


@dataclass(frozen=True)
class EvidenceSpec:
    name: str
    summary: str
    # per model: (model, outputs=(train_logits, test_logits), inputs) -> metrics; or, with needs_reference,
    # (outputs, reference_outputs, inputs) -> metrics, computed once retrain's outputs exist; or 'module:function'
    function: Callable | str
    needs_reference: bool = False
    modalities: tuple[str, ...] = ("image",)  # the data modalities it scores (a text run refuses the others)

    @property
    def fn(self) -> Callable:
        return resolve(self.function)


EVIDENCE: Registry[EvidenceSpec] = Registry("evidence metric")


def register_evidence(name: str, summary: str, needs_reference: bool = False, modalities: tuple[str, ...] = ("image",)):
    """Register the decorated function as evidence metric `name` (see EvidenceSpec for its signature)."""

    def wrap(fn):
        EVIDENCE.add(name, EvidenceSpec(name, summary, fn, needs_reference, tuple(modalities)))
        return fn

    return wrap


_EVIDENCE = f"{__package__}.evidence"
for _name, _function, _summary, _reference, _modalities in [
    ("probe", "probe_metric", "linear probe on penultimate features: forgotten classes vs rest, balanced accuracy %", False,
     ("image",)),
    ("relearn", "relearn_metric", ("forgotten classes' test accuracy % after a few steps on a few of their samples; on "
                                   "text, the other forget questions' ROUGE-L after a few steps on a few of them, and "
                                   "the steps it takes to reach eval.relearn_level"), False, ("image", "text")),
    ("divergence", "divergence_metric", "KL(retrain || model) and JS on forget and test samples, nats", True, ("image",)),
    ("attack", "attack_metric", ("U-LiRA-style attack: balanced accuracy % telling this model's forget samples from "
                                 "retrain's (50 = indistinguishable); trains eval.attack_shadows shadow retrains"), True,
     ("image",)),
]:
    EVIDENCE.add(_name, EvidenceSpec(_name, _summary, f"{_EVIDENCE}:{_function}", _reference, _modalities))
_QUALITY = f"{__package__}.quality"
for _name, _function, _summary in [
    ("forgetting_quality", "forgetting_quality_metric",
     ("the NeurIPS 2023 unlearning challenge's score: per-sample epsilon, forgetting score F (0..1) with a 95% "
      "bootstrap interval, F x RA and TA ratios to retrain, and the samples that still leak; from "
      "eval.quality_models unlearned originals of other seeds and as many shadow retrains")),
    ("klom", "klom_metric", ("KL divergence of margins (nats) between unlearned and retrained models, per forget "
                             "sample (mean, 95th percentile) and test sample (mean); the same models")),
]:
    EVIDENCE.add(_name, EvidenceSpec(_name, _summary, f"{_QUALITY}:{_function}", False))


# ---------------------------------------------------------------- every metric a run records, declared once


@dataclass(frozen=True)
class Metric:
    """A metric a run records, declared once: the tables, the summary over seeds (report.md, .csv, .tex), the plots,
    the progress line, the gap to retrain, `prunelora tune`'s objectives and records, `prunelora report`'s checks
    and `prunelora list` read these declarations; a key no declaration names is in no table."""

    key: str
    header: str  # its column's header
    modalities: tuple[str, ...]  # image, text
    table: str  # the table that shows it: image main | mia | evidence | quality | leaks; text main | sets
    digits: int = 2  # decimals in a one-seed table (an image table's mean ± std cells always have 2)
    better: str = "higher"  # higher | lower | retrain (closest to the retrained model's value)
    fmt: str = "f"  # f: fixed decimals; e: scientific (p-values that reach 1e-10)
    reference: bool = False  # computed against the retrained model, once every method has run
    cost: bool = False  # time or memory, not a property of the model
    gap: bool = False  # enters Avg gap, the mean |difference| to retrain (and `tune`'s gap objective on images)
    summary: bool = False  # a column of the summary over seeds (image runs; a text run's summary has every metric)
    bar: bool = False  # a panel of bars.png (a percentage)
    progress: bool = False  # on each method's progress line; every finished run holds it
    also: tuple[tuple[str, str], ...] = ()  # further (table, header) where it is shown too
    parts: tuple[str, ...] = ()  # keys recorded beside it that its cell or section reads (an interval's ends)
    kind: str = "number"  # number | list (of records)

    def shown_in(self, table: str) -> str | None:
        """Its header in `table`, or None where it is not shown."""
        return self.header if table == self.table else dict(self.also).get(table)


IMAGE, TEXT, BOTH = ("image",), ("text",), ("image", "text")
_QUALITY_PARTS = ("quality_models", "quality_ceiling", "quality_max_epsilon")  # the resolution the section states

# in the order of the image summary's columns; every table keeps this order among its own metrics
METRICS: tuple[Metric, ...] = (
    # the paper's four (%) and the forgotten classes' test accuracy
    Metric("UA", "UA", IMAGE, "main", better="retrain", gap=True, summary=True, bar=True, progress=True),
    Metric("MIA", "MIA", IMAGE, "main", better="retrain", gap=True, summary=True, bar=True, progress=True,
           also=(("mia", "confidence (SVC)"),)),
    Metric("RA", "RA", IMAGE, "main", gap=True, summary=True, bar=True, progress=True),
    Metric("TA", "TA", IMAGE, "main", gap=True, summary=True, bar=True, progress=True),
    Metric("forget_TA", "Forget TA", IMAGE, "main", better="retrain"),
    # evidence (eval.evidence)
    Metric("probe", "Probe %", IMAGE, "evidence", better="retrain", summary=True),
    Metric("relearn_TA", "Relearn TA %", IMAGE, "evidence", better="retrain", summary=True, bar=True),
    Metric("attack", "Attack %", IMAGE, "evidence", better="lower", reference=True, summary=True, bar=True),
    Metric("KL_forget", "KL forget", IMAGE, "evidence", 4, better="lower", reference=True),
    Metric("JS_forget", "JS forget", IMAGE, "evidence", 4, better="lower", reference=True, summary=True),
    Metric("KL_test", "KL test", IMAGE, "evidence", 4, better="lower", reference=True),
    Metric("JS_test", "JS test", IMAGE, "evidence", 4, better="lower", reference=True),
    Metric("quality_F", "F [95% interval]", IMAGE, "quality", 3, summary=True,
           parts=("quality_F_low", "quality_F_high", *_QUALITY_PARTS)),
    Metric("quality_score", "Final score [95%]", IMAGE, "quality", 3, summary=True,
           parts=("quality_score_low", "quality_score_high")),
    Metric("quality_leaking", "Leaking %", IMAGE, "quality", 1, better="lower"),
    Metric("KLOM_forget", "KLOM forget", IMAGE, "quality", 3, better="lower", summary=True),
    Metric("KLOM_forget_p95", "KLOM forget p95", IMAGE, "quality", 3, better="lower"),
    Metric("KLOM_test", "KLOM test", IMAGE, "quality", 3, better="lower"),
    Metric("quality_time_s", "F s", IMAGE, "quality", 1, better="lower", cost=True),
    Metric("klom_time_s", "KLOM s", IMAGE, "quality", 1, better="lower", cost=True),
    Metric("quality_leaks", "Samples that still leak", IMAGE, "leaks", better="lower", kind="list"),
    # TOFU's headline pair: forget quality (KS-test p-value against retrain's truth ratios; retrain's own is 1) and
    # model utility (harmonic mean over the retained authors and the extra facts)
    Metric("forget_quality", "Forget quality", TEXT, "main", 1, fmt="e", reference=True),
    Metric("model_utility", "Model utility", TEXT, "main", 3, progress=True),
    Metric("forget_rougeL", "Forget ROUGE-L", TEXT, "main", 3, better="retrain", gap=True, progress=True),
    Metric("forget_prob", "Forget prob", TEXT, "main", 3, better="retrain", gap=True),
    Metric("forget_truth_ratio", "Forget truth ratio", TEXT, "main", 3, better="retrain"),
    Metric("privleak", "privleak", TEXT, "main", 1, better="retrain", reference=True),
    Metric("forget_ES", "Forget ES", TEXT, "main", 3, better="retrain"),
    # evidence relearn: held-out forget ROUGE-L after the attack, and the steps it took to reach eval.relearn_level
    # (None: not within eval.relearn_steps, shown '-': what a model that never learnt the authors gets)
    Metric("relearn_rougeL", "Relearn ROUGE-L", TEXT, "main", 3, better="retrain"),
    Metric("relearn_steps", "Relearn steps", TEXT, "main", 0, better="higher"),
    Metric("forget_EM", "Forget EM", TEXT, "sets", 3, better="retrain"),
    Metric("retain_rougeL", "Retain ROUGE-L", TEXT, "sets", 3, gap=True),
    Metric("retain_prob", "Retain prob", TEXT, "sets", 3, gap=True),
    Metric("retain_truth_ratio", "Retain truth ratio", TEXT, "sets", 3),
    Metric("holdout_rougeL", "Holdout ROUGE-L", TEXT, "sets", 3, better="retrain", gap=True),
    Metric("holdout_prob", "Holdout prob", TEXT, "sets", 3, better="retrain", gap=True),
    Metric("holdout_truth_ratio", "Holdout truth ratio", TEXT, "sets", 3, better="retrain"),
    Metric("facts_rougeL", "Facts ROUGE-L", TEXT, "sets", 3, gap=True),
    Metric("facts_prob", "Facts prob", TEXT, "sets", 3, gap=True),
    Metric("facts_truth_ratio", "Facts truth ratio", TEXT, "sets", 3),
    Metric("facts_norm_prob", "Facts norm. prob", TEXT, "sets", 3),  # model utility's facts probability
    Metric("min_k_auc", "Min-k AUC", TEXT, "sets", 3, better="retrain"),  # privleak's: forget vs holdout authors
    # cost and comparisons, both modalities
    Metric("time_s", "Time s", BOTH, "main", 1, better="lower", cost=True, summary=True, progress=True),
    # the training loop's seconds per epoch, and the seconds outside it (pruning, wrapping, BatchNorm recalibration,
    # merging, importance estimates): time_s = loop_s_per_epoch x epochs + one_off_s
    Metric("loop_s_per_epoch", "Loop s/epoch", BOTH, "main", better="lower", cost=True),
    Metric("one_off_s", "One-off s", BOTH, "main", 1, better="lower", cost=True),
    Metric("time_vs_retrain", "x retrain", BOTH, "main", better="lower", reference=True, cost=True),
    Metric("peak_memory_mb", "Peak MB", BOTH, "main", 1, better="lower", cost=True, summary=True),
    Metric("avg_gap", "Avg gap", IMAGE, "main", better="lower", reference=True),  # points
    Metric("avg_gap", "Avg gap", TEXT, "main", 3, better="lower", reference=True),  # probabilities, ROUGE-L
    Metric("cumulative_time_s", "Cumulative s", IMAGE, "main", 1, better="lower", cost=True),  # requests so far
    # MIA-Efficacy by attack feature (%)
    Metric("MIA_entropy", "entropy (SVC)", IMAGE, "mia", better="retrain"),
    Metric("MIA_m_entropy", "m-entropy (SVC)", IMAGE, "mia", better="retrain"),
    Metric("MIA_loss_balanced", "loss (log. reg., balanced)", IMAGE, "mia", better="retrain"),
    Metric("MIA_loss_authors", "loss (log. reg., authors' code: unbalanced)", IMAGE, "mia", better="retrain"),
)
TEXT_SETS = ("forget", "retain", "holdout", "facts")  # the rows each text metric is computed on


def declared(modality: str, table: str | None = None, **flags) -> tuple[Metric, ...]:
    """The metrics of `modality`, in declaration order: those `table` shows (if given) and with every flag given
    equal to its value (e.g. gap=True)."""
    return tuple(m for m in METRICS if modality in m.modalities and (table is None or m.shown_in(table))
                 and all(getattr(m, k) == v for k, v in flags.items()))


def keys(modality: str, table: str | None = None, **flags) -> tuple[str, ...]:
    """The keys of `declared(modality, table, **flags)`."""
    return tuple(m.key for m in declared(modality, table, **flags))


def summary_keys(modality: str) -> tuple[str, ...]:
    """The summary's columns: the image summary's, or every number a text run records in its tables."""
    if modality == "text":
        return tuple(m.key for m in declared("text") if m.kind == "number")
    return keys(modality, summary=True)


def recorded(modality: str | None = None) -> set[str]:
    """Every key a run may record: the declared metrics and their parts (of one modality if given)."""
    chosen = METRICS if modality is None else declared(modality)
    return {k for m in chosen for k in (m.key, *m.parts)}

"""What evidence metrics exist (`eval.evidence`), read without importing PyTorch: each one's name, summary, whether
it compares with retrain's outputs, and its function (in `evidence.py`), imported when it is computed; and the text
modality's metrics (`TEXT_METRICS`: key, header, digits, which direction is better), which its tables read."""

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


# ---------------------------------------------------------------- the text modality's metrics


@dataclass(frozen=True)
class TextMetric:
    """A metric of a text run, declared once: the text table, the summary over seeds, the progress line and the
    gap to retrain read it. `better`: higher | lower | retrain (closest to the retrained model's value: forgetting
    shows as a forget ROUGE-L down at retrain's, not at 0). `gap`: in the mean |difference| to retrain."""

    key: str
    header: str
    digits: int = 3
    better: str = "higher"
    gap: bool = False
    progress: bool = False  # printed on each method's progress line


TEXT_SETS = ("forget", "retain", "holdout", "facts")  # the rows each text metric is computed on
TEXT_METRICS: tuple[TextMetric, ...] = (
    # TOFU's headline pair: forget quality (KS-test p-value against retrain's truth ratios; retrain's own is 1) and
    # model utility (harmonic mean over the retained authors and the extra facts)
    TextMetric("forget_quality", "Forget quality", 3),  # (with retrain: after every method has run)
    TextMetric("model_utility", "Model utility", progress=True),
    TextMetric("forget_rougeL", "Forget ROUGE-L", better="retrain", gap=True, progress=True),
    TextMetric("forget_prob", "Forget prob", better="retrain", gap=True),
    TextMetric("forget_truth_ratio", "Forget truth ratio", better="retrain"),
    TextMetric("forget_ES", "Forget ES", better="retrain"),
    TextMetric("forget_EM", "Forget EM", better="retrain"),
    TextMetric("privleak", "privleak", 1, better="retrain"),
    TextMetric("retain_rougeL", "Retain ROUGE-L", gap=True),
    TextMetric("retain_prob", "Retain prob", gap=True),
    TextMetric("retain_truth_ratio", "Retain truth ratio"),
    TextMetric("holdout_rougeL", "Holdout ROUGE-L", better="retrain", gap=True),
    TextMetric("holdout_prob", "Holdout prob", better="retrain", gap=True),
    TextMetric("facts_rougeL", "Facts ROUGE-L", gap=True),
    TextMetric("facts_prob", "Facts prob", gap=True),
    TextMetric("facts_truth_ratio", "Facts truth ratio"),
    TextMetric("time_s", "Time s", 1, better="lower", progress=True),
    TextMetric("time_per_epoch_s", "s/epoch", 2, better="lower"),
    TextMetric("time_vs_retrain", "x retrain", 2, better="lower"),
    TextMetric("peak_memory_mb", "Peak MB", 1, better="lower"),
    TextMetric("avg_gap", "Avg gap", 3, better="lower"),
)
# keys a text run records that no table shows: the inputs of model utility and privleak
TEXT_EXTRAS = ("facts_norm_prob", "min_k_auc", "holdout_truth_ratio")


def text_keys(flag: str | None = None) -> tuple[str, ...]:
    """The text metrics' keys, in table order; those with `flag` (gap, progress) set if given."""
    return tuple(m.key for m in TEXT_METRICS if flag is None or getattr(m, flag))

"""What evidence metrics exist (`eval.evidence`), read without importing PyTorch: each one's name, summary, whether
it compares with retrain's outputs, and its function (in `evidence.py`), imported when it is computed."""

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

    @property
    def fn(self) -> Callable:
        return resolve(self.function)


EVIDENCE: Registry[EvidenceSpec] = Registry("evidence metric")


def register_evidence(name: str, summary: str, needs_reference: bool = False):
    """Register the decorated function as evidence metric `name` (see EvidenceSpec for its signature)."""

    def wrap(fn):
        EVIDENCE.add(name, EvidenceSpec(name, summary, fn, needs_reference))
        return fn

    return wrap


_EVIDENCE = f"{__package__}.evidence"
for _name, _function, _summary, _reference in [
    ("probe", "probe_metric", "linear probe on penultimate features: forgotten classes vs rest, balanced accuracy %", False),
    ("relearn", "relearn_metric", "forgotten classes' test accuracy % after a few steps on a few of their samples", False),
    ("divergence", "divergence_metric", "KL(retrain || model) and JS on forget and test samples, nats", True),
    ("attack", "attack_metric", ("U-LiRA-style attack: balanced accuracy % telling this model's forget samples from "
                                 "retrain's (50 = indistinguishable); trains eval.attack_shadows shadow retrains"), True),
]:
    EVIDENCE.add(_name, EvidenceSpec(_name, _summary, f"{_EVIDENCE}:{_function}", _reference))
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

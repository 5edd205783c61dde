"""The models behind the forgetting-quality scores (`quality.py`): N unlearned models and N retrained ones.

- Unlearned: the method under evaluation run on N originals. The first is the run's own (seed `seed`, its model
  already unlearned); original k >= 1 is trained with seed `quality_seed(seed, k)`, kept in the model cache like any
  original, and unlearned by the method with that seed. For the row `original` the originals themselves are scored.
- Retrained: the attack's shadows (seeds 1_000_000 + k, `evidence.shadow_model`), shared through the model cache.

Both sides' (train, test) logits are kept for the last request and method in this process, so that
`forgetting_quality` and `klom` asked together train nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np

from ..config import SEED_MAX, to_dict
from ..engine.meter import CostMeter
from ..metrics.evaluate import outputs
from ..metrics.evidence import EvidenceInput, shadow_model

Outputs = tuple[np.ndarray, np.ndarray]  # (train logits, test logits) of one model

ORIGINAL_STRIDE = 1_000_003  # seeds of the extra originals: seed + k * stride (mod 2**31), far from any run's own
_RETRAINED: dict[str, list[Outputs]] = {}
_UNLEARNED: dict[str, list[Outputs]] = {}


def quality_seed(seed: int, k: int) -> int:
    """The seed of the k-th original behind the unlearned side (k = 0: the run's own)."""
    return (seed + k * ORIGINAL_STRIDE) % (SEED_MAX + 1)


def ensemble(own: Outputs, inputs: EvidenceInput) -> tuple[list[Outputs], list[Outputs]]:
    """(unlearned, retrained): eval.quality_models (train, test) logits each; `own` is the run's model's."""
    if inputs.method is None:
        raise ValueError("the forgetting-quality scores need the method that made the model (EvidenceInput.method)")
    n = inputs.config.quality_models
    request = _request_memo(inputs)
    retrained_key = f"{request}-{n}"
    if retrained_key not in _RETRAINED:
        _RETRAINED.clear()  # one request's models are all a run needs
        _RETRAINED[retrained_key] = [_outputs(shadow_model(inputs, k), inputs) for k in range(n)]
    described = to_dict(inputs.experiment)
    described["eval"].pop("quality_phi", None)  # how phi is read off the logits changes no model
    unlearned_key = json.dumps([described, inputs.splits.forget.tolist(), inputs.method], sort_keys=True)
    if unlearned_key not in _UNLEARNED:
        _UNLEARNED.clear()
        _UNLEARNED[unlearned_key] = [own] + [_outputs(unlearned_model(inputs, k), inputs) for k in range(1, n)]
    return _UNLEARNED[unlearned_key], _RETRAINED[retrained_key]


def unlearned_model(inputs: EvidenceInput, k: int):
    """The method of `inputs` run on original k (trained or read from the model cache), seeded with its seed."""
    from ..methods import UnlearnTask
    from .experiment import train_original
    from .unlearn import unlearn_one

    seed = quality_seed(inputs.experiment.seed, k)
    cfg = dataclasses.replace(inputs.experiment, seed=seed, seeds=[],
                              eval=dataclasses.replace(inputs.experiment.eval, curves=False))
    ctx = dataclasses.replace(inputs.ctx, seed=seed, meter=CostMeter(inputs.ctx.device), monitor=None)
    original, _ = train_original(cfg, inputs.data, ctx)
    if inputs.method == "original":
        return original
    model, _ = unlearn_one(inputs.method, original, UnlearnTask(inputs.data, inputs.splits, cfg), ctx)
    return model


def _outputs(model, inputs: EvidenceInput) -> Outputs:
    return outputs(model, inputs.data, inputs.ctx, inputs.config.batch_size)


def _request_memo(inputs: EvidenceInput) -> str:
    """What the retrained models depend on: data, model, recipe and the forget set."""
    cfg = inputs.experiment
    described = json.dumps([to_dict(cfg.data), to_dict(cfg.model), to_dict(cfg.train), inputs.splits.forget.tolist(),
                            cfg.cache], sort_keys=True)
    return f"{zlib.crc32(described.encode()):08x}-{len(described)}"

"""A text run's metrics of one model: each question set's answer probability and ROUGE-L recall (`text.py` computes
them per question, once per model), averaged into the keys `catalog.TEXT_METRICS` declares.

The sets: the forgotten authors' questions, the retained authors', the holdout authors' (never trained on: what a
model gets from the answer templates alone) and the extra facts (knowledge outside the authors, always retained).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.text import FACT_LABEL, TextData
from .catalog import TEXT_SETS
from .text import score_answers

MAX_NEW_TOKENS = 32  # greedy answer length cap, in tokens (open-unlearning's TOFU generation uses 200 characters)


def text_sets(data: TextData, splits) -> dict[str, tuple[torch.Tensor, bool]]:
    """{set: (rows, whether they are test rows)} of the four question sets."""
    y = data.y_train.cpu()
    retain = splits.retain.cpu()
    return {
        "forget": (splits.forget.cpu(), False),
        "retain": (retain[y[retain] >= 0], False),
        "holdout": (torch.arange(len(data.y_test)), True),
        "facts": (retain[y[retain] == FACT_LABEL], False),
    }


def evaluate_text(model, data: TextData, splits, ctx, batch_size: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """(metrics, outputs): each set's mean probability and ROUGE-L recall, and the per-question figures kept for
    comparisons and resumed runs: (train rows x [nll, ROUGE-L], test rows x [nll, ROUGE-L]), NaN where not scored."""
    metrics = {}
    train = np.full((len(data.y_train), 2), np.nan)
    test = np.full((len(data.y_test), 2), np.nan)
    for name, (rows, is_test) in text_sets(data, splits).items():
        assert name in TEXT_SETS
        if len(rows) == 0:
            metrics[f"{name}_prob"] = metrics[f"{name}_rougeL"] = None
            continue
        prompts, answers = data.prompts_answers(rows, is_test)
        scores = score_answers(model, prompts, answers, data.tokenizer.decode, data.eos_id, MAX_NEW_TOKENS,
                               batch_size=batch_size, device=ctx.device)
        metrics[f"{name}_prob"] = float(scores.probability.mean())
        metrics[f"{name}_rougeL"] = float(np.mean(scores.rouge_l))
        target = test if is_test else train
        target[rows.numpy(), 0] = scores.nll.numpy()
        target[rows.numpy(), 1] = scores.rouge_l
    return metrics, (train, test)

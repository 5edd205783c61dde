"""The relearning attack on a text run (evidence `relearn`, its text version): do the forgotten authors come back
from a few of their questions?

On a copy of the model (every weight trainable; the model itself is not touched), full-batch Adam (lr
`eval.relearn_lr`) on `eval.relearn_samples` forget questions drawn with the run's seed, mixed with 4x as many
retained rows (the image version's rule, `evidence.relearn`), with the engine's loss on answer tokens
(`engine.loop.AnswerLogits`, `answer_loss`), for `eval.relearn_steps` steps. Scored on the forget questions NOT
trained on (the held-out ones): the ROUGE-L recall of their greedy answers, as the text metrics score it
(`text_eval.MAX_NEW_TOKENS`). A model that never learnt the authors (retrain) cannot answer them from a handful
of other questions; a model that only suppressed them gets them back (Hu et al. 2024, "Jogging the memory of
unlearned LLMs through targeted relearning attacks", fine-tune on part of the forget set and score the rest).

Keys: `relearn_rougeL`, the held-out forget ROUGE-L after the whole budget, in [0, 1]; `relearn_steps`, the first
checked step at which it reaches `eval.relearn_level` (0: already there before any step; None: never within the
budget).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..data.text import TextData
from ..engine.context import Context
from ..engine.loop import AnswerLogits, Batch, answer_loss
from .evidence import relearn_rows
from .text import greedy_rouge
from .text_eval import MAX_NEW_TOKENS, OUTPUT_COLUMNS


def check_steps(budget: int) -> list[int]:
    """The steps after which held-out ROUGE-L is scored: 0, 1, 2, 4, 8, ... and the budget. A check generates greedy
    answers to every held-out question: 0.09 s for the default run's 92 (llama-tiny, 2-core EPYC), three training
    steps' worth (30 ms each), so a check at every step would cost 4x the training; at doubling steps it costs
    log2(budget) checks (5 for 16 steps), and `relearn_steps` is the first checked step at or past the crossing
    (at most twice the true one). Step 0 reuses the model's own forget ROUGE-L where given (no generation)."""
    steps, step = {0, budget}, 1
    while step < budget:
        steps.add(step)
        step *= 2
    return sorted(steps)


def steps_to_level(curve: dict[int, float], level: float) -> int | None:
    """The first step of `curve` ({step: held-out ROUGE-L}) whose ROUGE-L is at least `level`; None if none is."""
    return next((step for step, value in sorted(curve.items()) if value >= level), None)


def relearn_curve(model, data: TextData, trained: torch.Tensor, held: torch.Tensor, ctx: Context, steps: int,
                  lr: float, level: float, before: float | None = None, batch_size: int = 64) -> dict[int, float]:
    """{step: mean held-out ROUGE-L} of a copy of `model` trained `steps` full-batch Adam steps on `trained`,
    scored at `check_steps(steps)` until it reaches `level`, then only after the last step (what the keys read).
    `before`: the model's own held-out ROUGE-L, if known (then step 0 generates nothing)."""
    student = copy.deepcopy(model).eval()  # eval: no dropout, so the attack is deterministic
    prompts, answers = data.prompts_answers(held)

    def score() -> float:
        rouge, _ = greedy_rouge(student, prompts, answers, data.tokenizer.decode, data.eos_id, MAX_NEW_TOKENS,
                                batch_size, ctx.device)
        return float(np.mean(rouge))

    curve = {0: score() if before is None else before}
    rows = trained.to(data.x_train.device)
    ids, labels = (t.to(ctx.device) for t in data.batch(rows))
    keep, batch = labels[:, 1:] != -100, Batch(ids, labels, rows, 0)
    forward = AnswerLogits(student)
    checks = set(check_steps(steps))
    with torch.enable_grad():
        for p in student.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        for step in range(1, steps + 1):
            optimizer.zero_grad(set_to_none=True)
            with ctx.autocast():
                logits = forward(ids, keep)
            answer_loss(logits.float(), batch).backward()
            optimizer.step()
            reached = steps_to_level(curve, level) is not None
            if step == steps or (step in checks and not reached):
                curve[step] = score()
    return curve


def text_relearn_metric(model, outputs, inputs) -> dict:
    """`relearn_rougeL` and `relearn_steps` of one model (see the module's docstring); NaN and None when every forget
    question is trained on. `outputs`: the model's per-question figures (`text_eval.OUTPUT_COLUMNS`), whose forget
    ROUGE-L is the held-out questions' before any step."""
    cfg, splits, ctx = inputs.config, inputs.splits, inputs.ctx
    trained, held = relearn_rows(splits.forget.cpu(), splits.retain.cpu(), cfg.relearn_samples, ctx.seed)
    if len(held) == 0:
        return {"relearn_rougeL": float("nan"), "relearn_steps": None}
    before = None
    if outputs is not None:
        before = float(np.mean(outputs[0][held.numpy(), OUTPUT_COLUMNS.index("rougeL")]))
    curve = relearn_curve(model, inputs.data, trained, held, ctx, cfg.relearn_steps, cfg.relearn_lr,
                          cfg.relearn_level, before, cfg.batch_size)
    return {"relearn_rougeL": curve[cfg.relearn_steps], "relearn_steps": steps_to_level(curve, cfg.relearn_level)}

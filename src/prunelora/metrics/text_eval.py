"""A text run's metrics of one model: each question set's answer probability, ROUGE-L recall and truth ratio, the
forgotten authors' extraction strength and exact memorisation, model utility and the min-k membership AUC
(`text.py` computes the per-question figures once per model, `tofu.py` the formulas), under the keys
`catalog.METRICS` declares. Forget quality and privleak compare with the retrained model
(`scoring.add_text_comparisons`), from the per-question figures each model keeps (`OUTPUT_COLUMNS`).

The sets: the forgotten authors' questions, the retained authors', the holdout authors' (never trained on: what a
model gets from the answer templates alone) and the extra facts (knowledge outside the authors, always retained).
As TOFU's configs set them: the truth ratio's true answer is the paraphrase on author sets and the trained answer
on the extra facts (TOFU's utility sets); its summary is `closer_to_1_better` on the forgotten authors and
`true_better` elsewhere; model utility is the harmonic mean of the retained authors' probability, ROUGE-L and truth
ratio and the extra facts' probability normalised over the options, ROUGE-L and truth ratio (six values; TOFU's
nine include two utility sets).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.text import FACT_LABEL, TextData
from . import tofu
from .catalog import TEXT_SETS
from .text import answer_tokens, score_answers

MAX_NEW_TOKENS = 32  # greedy answer length cap, in tokens (open-unlearning's TOFU generation allows 64)
MIN_K = 0.4  # privleak's min-k% share (open-unlearning's TOFU privleak config)
# what each model keeps per question (train rows, test rows) for the comparisons with retrain and resumed runs
OUTPUT_COLUMNS = ("nll", "rougeL", "truth_ratio", "min_k")


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


def alternatives_nll(model, data: TextData, rows: torch.Tensor, test: bool, prompts, device,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(paraphrase NLL (N,), perturbed answers' NLL (N, K)), in one teacher-forced pass."""
    paraphrases, perturbed = data.alternatives(rows, test)
    k = len(perturbed[0])
    answers = paraphrases + [p for row in perturbed for p in row]
    many = prompts + [p for p in prompts for _ in range(k)]
    nll = answer_tokens(model, many, answers, batch_size, device).nll.numpy()
    return nll[:len(prompts)], nll[len(prompts):].reshape(len(prompts), k)


def score_set(model, data: TextData, name: str, rows: torch.Tensor, test: bool, ctx, batch_size: int) -> dict:
    """One set's per-question figures and summaries."""
    prompts, answers = data.prompts_answers(rows, test)
    scores = score_answers(model, prompts, answers, data.tokenizer.decode, data.eos_id, MAX_NEW_TOKENS,
                           batch_size=batch_size, device=ctx.device)
    paraphrase, wrong = alternatives_nll(model, data, rows, test, prompts, ctx.device, batch_size)
    trained = scores.nll.numpy()
    true = trained if name == "facts" else paraphrase
    ratios = tofu.truth_ratios(true, wrong)
    # extraction strength, exact memorisation and min-k read the answer without its EOS, as open-unlearning's do
    tokens = scores.tokens
    per = {"nll": trained, "rougeL": np.asarray(scores.rouge_l), "truth_ratio": ratios,
           "min_k": np.array([tofu.min_k_score(lp[:-1].numpy(), MIN_K) for lp in tokens.logprobs])}
    out = {"per": per, f"{name}_prob": float(scores.probability.mean()), f"{name}_rougeL": float(np.mean(scores.rouge_l)),
           f"{name}_truth_ratio": tofu.truth_ratio_summary(ratios, "closer_to_1_better" if name == "forget" else
                                                           "true_better")}
    if name == "forget":
        out["forget_ES"] = float(np.mean([tofu.extraction_strength(p[:-1], a[:-1])
                                          for p, a in zip(tokens.argmax, answers)]))
        out["forget_EM"] = float(np.mean([tofu.exact_memorization(p[:-1], a[:-1])
                                          for p, a in zip(tokens.argmax, answers)]))
    if name == "facts":
        out["facts_norm_prob"] = tofu.normalised_probability(np.exp(-trained), np.exp(-wrong))
    return out


def evaluate_text(model, data: TextData, splits, ctx, batch_size: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """(metrics, outputs): every declared per-model text metric, and each question's figures (`OUTPUT_COLUMNS`;
    train rows, then test rows; NaN where a row was not scored)."""
    metrics = {}
    train = np.full((len(data.y_train), len(OUTPUT_COLUMNS)), np.nan)
    test = np.full((len(data.y_test), len(OUTPUT_COLUMNS)), np.nan)
    sets_rows = text_sets(data, splits)
    for name, (rows, is_test) in sets_rows.items():
        assert name in TEXT_SETS
        if len(rows) == 0:
            raise ValueError(f"the {name} set of this text request is empty")
        scores = score_set(model, data, name, rows, is_test, ctx, batch_size)
        per = scores.pop("per")
        metrics.update(scores)
        target = test if is_test else train
        for j, column in enumerate(OUTPUT_COLUMNS):
            target[rows.numpy(), j] = per[column]
    metrics["model_utility"] = tofu.model_utility([
        metrics["retain_prob"], metrics["retain_rougeL"], metrics["retain_truth_ratio"],
        metrics["facts_norm_prob"], metrics["facts_rougeL"], metrics["facts_truth_ratio"]])
    forget, holdout = sets_rows["forget"][0], sets_rows["holdout"][0]
    min_k = OUTPUT_COLUMNS.index("min_k")
    metrics["min_k_auc"] = tofu.auc_members(train[forget.numpy(), min_k], test[holdout.numpy(), min_k])
    return metrics, (train, test)

"""Per-model scores of a causal language model on question-answer pairs, computed as open-unlearning (TOFU) computes
them: the answer probability of each question, and the ROUGE-L recall of the model's greedy answer.

An example is a prompt token list (the question, e.g. "Question: ...?\\nAnswer:") and an answer token list (the answer,
usually ending with the EOS id). The reference is open-unlearning's `src/evals/metrics/memorization.py` (metrics
`probability` and `rouge`) and `src/evals/metrics/utils.py` (`evaluate_probability`, `eval_text_similarity` and its
`eval_rouge_recall_batch`), with the examples prepared by `src/data/utils.py` (`preprocess_chat_instance`):

* answer NLL: the cross-entropy of each answer token given everything before it (teacher forcing), summed over the
  answer tokens and divided by their number: `avg_loss`, nats per token. open-unlearning's labels are the answer
  tokens followed by EOS (preprocess_chat_instance appends it); here they are whatever the answer list holds, so pass
  answers that end with EOS to match.
* answer probability: exp(-avg_loss), the geometric mean of the per-token probabilities (TOFU's "Prob.").
* ROUGE-L recall: `RougeScorer(["rougeL"], use_stemmer=True).score(ground_truth, generation)["rougeL"].recall`, the
  ground truth being the target (first argument): the longest common subsequence of words over the reference's word
  count. The generation is greedy (do_sample=False) and ends at the first EOS; both texts are stripped of surrounding
  whitespace, as open-unlearning does.

Departures from open-unlearning, none of which changes a score beyond rounding:

* the output projection runs only at the answer-predicting positions (the same numbers: a row's logits do not
  depend on the other positions');
* generation groups prompts of equal length into a batch, so no batch needs padding (open-unlearning left-pads a batch
  of 64 for `model.generate`); greedy tokens are those of each prompt alone, up to floating-point rounding;
* `max_new_tokens` defaults to 32 here (open-unlearning's `configs/generation/default.yaml` says 64);
* texts come from the caller's `decode` (open-unlearning decodes with skip_special_tokens=True and
  clean_up_tokenization_spaces=True, and takes the reference as the decoded labels minus the decoded prompt); the
  reference here is decode(answer without its trailing EOS);
* an empty prompt or answer is refused (ValueError); open-unlearning divides 0 by 0 for an empty answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@contextlib.contextmanager
def _inference(model) -> Iterator[None]:
    """Eval mode and no autograd for the block; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _cache_of(result) -> tuple[str, object]:
    """The KV cache a forward pass with use_cache=True returned, and the keyword that feeds it back: `cache` where
    transformers has renamed it (transformers 5.x, which deprecates `past_key_values`), else `past_key_values`."""
    keys = result.keys() if hasattr(result, "keys") else ()
    if "cache" in keys:
        return "cache", result["cache"]
    return "past_key_values", result.past_key_values


def _batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@dataclass
class AnswerTokens:
    """Teacher-forced figures of each example's answer tokens: their log-probabilities (nats, float64) and the
    model's argmax at each answer position (what it would have said there), in answer order."""

    logprobs: list[torch.Tensor]
    argmax: list[list[int]]

    @property
    def nll(self) -> torch.Tensor:
        """(N,) mean NLL per answer token, float64: open-unlearning's `avg_loss`."""
        return torch.stack([-lp.mean() for lp in self.logprobs]) if self.logprobs else torch.zeros(0, dtype=torch.float64)


def _answer_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """The logits at the `scored` positions (B, L-1) only: a transformers causal LM runs its decoder over the batch
    and its output projection over those positions (a third to a half of them on question-answer rows); any other
    model runs whole."""
    decoder, head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    if decoder is None or head is None or head() is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][scored]
    hidden = decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head()(hidden[:, :-1][scored])


def answer_tokens(model, prompts: list[list[int]], answers: list[list[int]], batch_size: int = 64,
                  device=None) -> AnswerTokens:
    """Per example: the log-probability of each answer token given the prompt and the answer tokens before it
    (teacher forcing), and the argmax there; one forward pass per batch serves every metric that reads them.

    Examples are sorted by total length and batched (`batch_size` at a time) so that a batch holds similar lengths;
    a batch is right-padded with token 0 under an attention mask, so the result does not depend on the batching."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        if not prompt:
            raise ValueError(f"example {i}: empty prompt (the first answer token needs a token before it)")
        if not answer:
            raise ValueError(f"example {i}: empty answer (a mean over no tokens)")
    device = _device(model, device)
    logprobs: list[torch.Tensor] = [torch.zeros(0)] * len(prompts)
    argmax: list[list[int]] = [[] for _ in prompts]
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers)]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    with _inference(model):
        for rows in _batches(order, batch_size):
            width = max(lengths[i] for i in rows)
            input_ids = torch.zeros(len(rows), width, dtype=torch.long)
            attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
            # scored[b, t]: the logits at position t predict an answer token (the token at t + 1)
            scored = torch.zeros(len(rows), width - 1, dtype=torch.bool)
            for b, i in enumerate(rows):
                p, a = len(prompts[i]), len(answers[i])
                input_ids[b, :p + a] = torch.tensor(prompts[i] + answers[i], dtype=torch.long)
                attention_mask[b, :p + a] = 1
                scored[b, p - 1:p + a - 1] = True
            # only the answer-predicting positions: (K, V) with K the batch's answer tokens, row-major
            picked = _answer_logits(model, input_ids.to(device), attention_mask.to(device), scored.to(device))
            targets = input_ids[:, 1:][scored].to(picked.device)
            token_lp = torch.log_softmax(picked.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
            token_lp = token_lp.to(torch.float64).cpu()
            token_argmax = picked.argmax(dim=-1).cpu()
            counts = scored.sum(dim=1).tolist()
            for i, lp, am in zip(rows, token_lp.split(counts), token_argmax.split(counts)):
                logprobs[i], argmax[i] = lp, am.tolist()
    return AnswerTokens(logprobs, argmax)


def answer_nll(model, prompts: list[list[int]], answers: list[list[int]], batch_size: int = 64,
               device=None) -> torch.Tensor:
    """Per example: the mean negative log-likelihood (nats per token) of the answer tokens given the prompt and the
    answer tokens before them (teacher forcing), as a float64 tensor of shape (N,) on the CPU (`answer_tokens`)."""
    return answer_tokens(model, prompts, answers, batch_size, device).nll


def answer_probability(nll: torch.Tensor) -> torch.Tensor:
    """exp(-mean token NLL): TOFU's per-question answer probability (open-unlearning's `prob`)."""
    return torch.exp(-nll)


def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int = 32, eos_id: int | None = None,
                    batch_size: int = 64, device=None) -> list[list[int]]:
    """Greedy continuation of each prompt (argmax at every step), without the prompt, cut at (and excluding) the
    first `eos_id`; at most `max_new_tokens` tokens. Returns token lists in the input order.

    Prompts of equal length are batched together (`batch_size` at a time), so no batch needs padding; decoding runs
    one token at a time on the model's KV cache (use_cache=True; the cache goes back as `cache`, or as
    `past_key_values` before transformers renamed it), and a batch stops as soon as every row has produced `eos_id`."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {i} is empty")
    device = _device(model, device)
    out: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return out
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    with _inference(model):
        for length in sorted(by_length):
            for rows in _batches(by_length[length], batch_size):
                input_ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
                attention_mask = torch.ones_like(input_ids)
                # logits_to_keep=1: the output projection at the last position only, the one decoding reads
                result = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
                token = result.logits[:, -1].argmax(dim=-1)
                steps = [token]
                done = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
                while len(steps) < max_new_tokens and not bool(done.all()):
                    attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
                    name, cache = _cache_of(result)
                    result = model(input_ids=token[:, None], attention_mask=attention_mask, use_cache=True,
                                   logits_to_keep=1, **{name: cache})
                    token = result.logits[:, -1].argmax(dim=-1)
                    steps.append(token)
                    if eos_id is not None:
                        done |= token == eos_id
                for b, tokens in enumerate(torch.stack(steps, dim=1).tolist()):
                    if eos_id is not None and eos_id in tokens:
                        tokens = tokens[:tokens.index(eos_id)]
                    out[rows[b]] = tokens
    return out


def rouge_l_recall(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L recall of each prediction against its reference (Porter stemming on): the longest common subsequence
    of words over the reference's word count, as open-unlearning's `eval_rouge_recall_batch` scores it (reference as
    the target, first argument of `RougeScorer.score`)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [float(scorer.score(target=ref, prediction=pred)["rougeL"].recall)
            for pred, ref in zip(predictions, references)]


@dataclass
class TextScores:
    nll: torch.Tensor  # (N,) mean answer-token NLL, float64
    probability: torch.Tensor  # (N,) exp(-nll)
    rouge_l: list[float]  # (N,) ROUGE-L recall of the greedy answer against the reference answer
    generations: list[str]  # (N,) the greedy answers, decoded and stripped
    tokens: AnswerTokens  # each answer token's log-probability and the argmax there


def score_answers(model, prompts: list[list[int]], answers: list[list[int]], decode: Callable[[list[int]], str],
                  eos_id: int | None, max_new_tokens: int = 32, batch_size: int = 64, device=None) -> TextScores:
    """Answer NLL and probability (teacher forcing on `answers`), and the ROUGE-L recall of the greedy answer to each
    prompt. `decode` turns token ids into text (the tokenizer's decode); the reference is decode(answer without a
    trailing `eos_id`), and both texts are stripped of surrounding whitespace, as in open-unlearning."""
    tokens = answer_tokens(model, prompts, answers, batch_size=batch_size, device=device)
    nll = tokens.nll
    rouge_l, generations = greedy_rouge(model, prompts, answers, decode, eos_id, max_new_tokens, batch_size, device)
    return TextScores(nll=nll, probability=answer_probability(nll), rouge_l=rouge_l, generations=generations,
                      tokens=tokens)


def greedy_rouge(model, prompts: list[list[int]], answers: list[list[int]], decode: Callable[[list[int]], str],
                 eos_id: int | None, max_new_tokens: int = 32, batch_size: int = 64,
                 device=None) -> tuple[list[float], list[str]]:
    """(ROUGE-L recall of each greedy answer, the greedy answers): `score_answers` without the teacher-forced pass,
    for callers that read ROUGE-L alone (the relearning attack scores it several times per model)."""
    generated = greedy_generate(model, prompts, max_new_tokens=max_new_tokens, eos_id=eos_id, batch_size=batch_size,
                                device=device)
    generations = [decode(tokens).strip() for tokens in generated]
    references = [decode(a[:-1] if eos_id is not None and a and a[-1] == eos_id else a).strip() for a in answers]
    return rouge_l_recall(generations, references), generations

"""The text metrics (`prunelora.metrics.text`) against by-hand computations on a tiny random Llama: answer NLL by
teacher forcing one example at a time, greedy decoding by re-running the whole sequence each step without a cache,
and ROUGE-L recall on hand-worked strings."""

from __future__ import annotations

import math
import random

import pytest
import torch

from prunelora.metrics.text import (
    TextScores,
    answer_nll,
    answer_probability,
    greedy_generate,
    rouge_l_recall,
    score_answers,
)

VOCAB = 50


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    net = LlamaForCausalLM(config)
    net.eval()
    return net


def _examples(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """`n` prompts of 1 to 9 tokens and answers of 1 to 7 tokens (ids 1..49: 0 is the padding id)."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 9))] for _ in range(n)]
    answers = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 7))] for _ in range(n)]
    return prompts, answers


def _nll_by_hand(model, prompt: list[int], answer: list[int]) -> float:
    """One example alone, no padding: mean over answer tokens of -log softmax(logits at the position before it)."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for k, token in enumerate(answer):
        position = len(prompt) - 1 + k  # the logits there predict the token at position + 1
        total -= torch.log_softmax(logits[position], dim=-1)[token].item()
    return total / len(answer)


def _greedy_by_hand(model, prompt: list[int], steps: int) -> list[int]:
    """Re-run the whole sequence every step, no cache, and take the argmax of the last position."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


# ---- answer NLL / probability ----

def test_answer_nll_matches_by_hand(model):
    prompts, answers = _examples(12)
    nll = answer_nll(model, prompts, answers)
    assert nll.dtype == torch.float64 and nll.shape == (12,)
    expected = torch.tensor([_nll_by_hand(model, p, a) for p, a in zip(prompts, answers)], dtype=torch.float64)
    torch.testing.assert_close(nll, expected, rtol=0, atol=1e-6)


def test_answer_nll_does_not_depend_on_batching_or_padding(model):
    prompts, answers = _examples(23, seed=1)
    lengths = {len(p) + len(a) for p, a in zip(prompts, answers)}
    assert len(lengths) > 3  # mixed lengths: every batch of 64 pads some rows
    one = answer_nll(model, prompts, answers, batch_size=1)
    torch.testing.assert_close(answer_nll(model, prompts, answers, batch_size=64), one, rtol=0, atol=1e-6)
    torch.testing.assert_close(answer_nll(model, prompts, answers, batch_size=5), one, rtol=0, atol=1e-6)
    # an example's NLL does not change with the company it keeps (here: alone vs with longer ones padded around)
    alone = answer_nll(model, prompts[:1], answers[:1])
    torch.testing.assert_close(alone, one[:1], rtol=0, atol=1e-6)


def test_answer_nll_restores_training_mode_and_refuses_empty(model):
    model.train()
    try:
        answer_nll(model, [[1, 2]], [[3]])
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError):
        answer_nll(model, [[1, 2]], [[]])
    with pytest.raises(ValueError):
        answer_nll(model, [[]], [[1]])
    with pytest.raises(ValueError):
        answer_nll(model, [[1]], [[1], [2]])


def test_answer_probability():
    prob = answer_probability(torch.tensor([0.0, math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(prob, torch.tensor([1.0, 0.5], dtype=torch.float64))


# ---- greedy generation ----

def test_greedy_matches_uncached_argmax_loop(model):
    prompts = [[3, 7, 1], [5], [9, 2, 4, 8, 6], [11, 12, 13], [40, 41], [3, 7, 1], [20, 21, 22, 23, 24, 25, 26]]
    expected = [_greedy_by_hand(model, p, 6) for p in prompts]
    # batch_size 2 splits the group of length-3 prompts; the output stays in the input order
    assert greedy_generate(model, prompts, max_new_tokens=6, batch_size=2) == expected
    assert greedy_generate(model, prompts, max_new_tokens=6) == expected
    # max_new_tokens is respected
    assert greedy_generate(model, prompts, max_new_tokens=2) == [e[:2] for e in expected]
    assert greedy_generate(model, prompts, max_new_tokens=0) == [[] for _ in prompts]


def test_greedy_cuts_at_eos(model):
    prompts = [[3, 7, 1], [5], [9, 2, 4, 8, 6], [11, 12, 13], [40, 41]]
    full = [_greedy_by_hand(model, p, 8) for p in prompts]
    eos = full[0][3]  # a token the first prompt produces at step 3 (or earlier)
    expected = [f[:f.index(eos)] if eos in f else f for f in full]
    assert expected[0] == full[0][:full[0].index(eos)] and len(expected[0]) <= 3
    assert greedy_generate(model, prompts, max_new_tokens=8, eos_id=eos) == expected


def test_greedy_stops_a_batch_once_every_row_has_eos(model):
    prompt = [3, 7, 1]
    full = _greedy_by_hand(model, prompt, 8)
    eos = full[2]
    stop = full.index(eos)  # first step producing eos (0-based)
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        got = greedy_generate(model, [prompt, prompt], max_new_tokens=8, eos_id=eos)
    finally:
        handle.remove()
    assert got == [full[:stop], full[:stop]]
    assert len(calls) == stop + 1  # one prefill, then one call per further token, none after eos


def test_greedy_restores_training_mode(model):
    model.train()
    try:
        greedy_generate(model, [[1, 2, 3]], max_new_tokens=2)
        assert model.training
    finally:
        model.eval()


# ---- ROUGE-L recall ----

def test_rouge_l_recall_hand_worked():
    scores = rouge_l_recall(
        ["the cat on mat", "the cat sat on the mat", "gamma delta", "running dogs"],
        ["the cat sat on the mat", "the cat sat on the mat", "alpha beta", "run dog"],
    )
    # LCS "the cat on mat" = 4 words of the reference's 6: recall 4/6 (precision would be 4/4 = 1, and the
    # arguments swapped would give 4/4 too: this case tells recall-against-the-reference apart)
    assert scores[0] == pytest.approx(4 / 6)
    assert scores[1] == 1.0
    assert scores[2] == 0.0
    assert scores[3] == 1.0  # Porter stemming: running -> run, dogs -> dog


def test_rouge_l_recall_is_against_the_reference():
    # reference 2 words, prediction 5 words containing both: recall 1, precision 2/5
    assert rouge_l_recall(["well the cat sat here"], ["cat sat"]) == [1.0]
    # reference 5 words, prediction 2 of them: recall 2/5, precision 1
    assert rouge_l_recall(["cat sat"], ["well the cat sat here"]) == [pytest.approx(2 / 5)]
    with pytest.raises(ValueError):
        rouge_l_recall(["a"], [])


# ---- all together ----

def test_score_answers(model):
    prompts = [[3, 7, 1], [5], [9, 2, 4, 8, 6]]
    eos = 49
    answers = [[10, 11, eos], [12, eos], [13, 14, 15]]  # the last has no eos: decoded whole
    words = {i: f"w{i}" for i in range(VOCAB)}

    def decode(tokens: list[int]) -> str:
        return " " + " ".join(words[t] for t in tokens) + " "

    scores = score_answers(model, prompts, answers, decode, eos_id=eos, max_new_tokens=5)
    assert isinstance(scores, TextScores)
    torch.testing.assert_close(scores.nll, answer_nll(model, prompts, answers))
    torch.testing.assert_close(scores.probability, torch.exp(-scores.nll))
    generated = greedy_generate(model, prompts, max_new_tokens=5, eos_id=eos)
    assert scores.generations == [decode(g).strip() for g in generated]
    references = ["w10 w11", "w12", "w13 w14 w15"]
    assert scores.rouge_l == rouge_l_recall(scores.generations, references)


def test_answer_tokens_give_each_tokens_log_probability_and_argmax(model):
    from prunelora.metrics.text import answer_tokens

    prompts, answers = _examples(9, seed=3)
    got = answer_tokens(model, prompts, answers, batch_size=4)
    for prompt, answer, lp, am in zip(prompts, answers, got.logprobs, got.argmax):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].double()
        at = [len(prompt) - 1 + k for k in range(len(answer))]  # the positions that predict the answer's tokens
        expected = [torch.log_softmax(logits[p], -1)[t].item() for p, t in zip(at, answer)]
        assert lp.tolist() == pytest.approx(expected, abs=1e-6)
        assert am == [int(logits[p].argmax()) for p in at]
    torch.testing.assert_close(got.nll, answer_nll(model, prompts, answers, batch_size=64), rtol=0, atol=1e-6)

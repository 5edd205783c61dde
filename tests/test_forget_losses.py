"""The forget losses of language models (methods/losses.py) on hand-worked values and against open-unlearning's
expressions as its trainer writes them (src/trainer/unlearn/npo.py and grad_diff.py; compute_dpo_loss and
compute_batch_nll in src/trainer/utils.py); and the per-answer NLL they read (engine/loop.sequence_nll)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunelora.engine.loop import sequence_nll
from prunelora.methods.losses import gradient_difference, npo


def test_npo_on_given_log_likelihoods():
    nll, ref = torch.tensor([2.0, 5.0]), torch.tensor([3.0, 3.0])
    # (2 / 0.1) x mean(ln(1 + e^(0.1 x 1)), ln(1 + e^(0.1 x -2))) = 20 x mean(0.744397, 0.598139)
    assert npo(nll, ref, beta=0.1).item() == pytest.approx(13.425355294551625, rel=1e-6)
    # at the reference it is 2 ln 2 / beta, and it falls as the answers grow less likely (NLL up)
    assert npo(ref, ref, beta=0.1).item() == pytest.approx(2 * math.log(2) / 0.1, rel=1e-6)
    assert npo(ref + 10, ref).item() < npo(ref + 1, ref).item() < npo(ref, ref).item()


def test_npo_is_open_unlearnings_expression():
    """compute_dpo_loss with win_inputs None: neg_log_ratios = lose_loss_current - lose_loss_ref;
    loss = -F.logsigmoid(beta * neg_log_ratios).mean() * 2 / beta (losses: summed token NLL per answer)."""
    generator = torch.Generator().manual_seed(0)
    nll, ref = torch.rand(16, generator=generator) * 40, torch.rand(16, generator=generator) * 40
    for beta in (0.1, 0.5, 2.0):
        theirs = -F.logsigmoid(beta * (nll - ref)).mean() * 2 / beta
        assert npo(nll, ref, beta).item() == pytest.approx(theirs.item(), rel=1e-6)
    # a wrong sign (the ratio the other way) gives another value
    assert npo(nll, ref, 0.1).item() != pytest.approx((-F.logsigmoid(0.1 * (ref - nll)).mean() * 20).item())


def test_gradient_difference_descends_retain_and_ascends_forget():
    retain, forget = torch.tensor(0.5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    loss = gradient_difference(retain, forget, alpha=1.0, gamma=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(-1.5) and retain.grad.item() == 1.0 and forget.grad.item() == -1.0
    assert gradient_difference(retain, forget, alpha=2.0, gamma=0.5).item() == pytest.approx(0.0)


def test_sequence_nll_sums_or_averages_each_answer():
    # two rows: row 0 has answer tokens at positions 1, 2; row 1 at position 3 (labels -100 elsewhere)
    labels = torch.tensor([[-100, 1, 2, -100], [-100, -100, -100, 0]])
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5], [0.125, 0.75, 0.125]]))
    # targets in row-major order: 1 (p 0.25), 2 (p 0.5), 0 (p 0.125)
    summed = sequence_nll(logits, labels, reduction="sum")
    assert summed.tolist() == pytest.approx([math.log(4) + math.log(2), math.log(8)])
    assert sequence_nll(logits, labels).tolist() == pytest.approx([(math.log(4) + math.log(2)) / 2, math.log(8)])


def test_the_objective_weighs_retain_rows_against_forget_rows():
    """On a batch of two retain rows then one forget row (images: one 'token' per row): graddiff is the retain rows'
    mean CE minus the forget row's; npo adds NPO of the forget row's CE against its reference."""
    from types import SimpleNamespace

    from prunelora.engine.loop import Batch
    from prunelora.methods.catalog import AdapterConfig
    from prunelora.methods.forget_terms import forget_objective

    logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.8, 0.2]]))
    y = torch.tensor([0, 1, 0])  # CE: ln 2, ln(4/3), ln(1.25)
    batch = Batch(torch.zeros(3, 1), y, torch.tensor([0, 1, 2]), 0)

    def task(**hp):
        return SimpleNamespace(hparams=AdapterConfig(**hp), data=SimpleNamespace(),
                               forget_mask=lambda device: torch.tensor([False, False, True]))

    retain, forget = (math.log(2) + math.log(4 / 3)) / 2, math.log(1.25)
    graddiff = forget_objective(task(forget_loss="graddiff", gamma=0.5), None, "cpu")(logits, batch)
    assert graddiff.item() == pytest.approx(retain - 0.5 * forget)
    reference = torch.tensor([0.0, 0.0, 1.0])
    npo_value = forget_objective(task(forget_loss="npo", beta=0.1), reference, "cpu")(logits, batch)
    assert npo_value.item() == pytest.approx(retain + 20 * math.log1p(math.exp(0.1 * (1.0 - forget))))


def test_forget_rows_beside_each_retain_batch_follow_the_sets_sizes():
    from types import SimpleNamespace

    from prunelora.methods.forget_terms import forget_batch

    def task(n_forget, n_retain):
        return SimpleNamespace(splits=SimpleNamespace(forget=torch.arange(n_forget), retain=torch.arange(n_retain)))

    # 5% of the authors: 100 forget rows beside 2,100 retained, batch 32 -> 2 a batch; 1%: 20 -> 1; images 800/7200
    assert [forget_batch(task(100, 2100), 32), forget_batch(task(20, 2100), 32), forget_batch(task(800, 7200), 128)] \
        == [2, 1, 15]


@pytest.mark.parametrize("loss", ["graddiff", "npo"])
def test_prunelora_with_a_forget_term_runs_on_images(loss, tiny_cfg, tiny_data, trained_original, cpu_ctx):
    import dataclasses

    from prunelora.methods import UnlearnTask
    from prunelora.methods.variants import method_task
    from prunelora.workflows.unlearn import unlearn_one

    data, splits = tiny_data
    hparams = {**tiny_cfg.hparams, "prunelora": {**tiny_cfg.hparams["prunelora"], "forget_loss": loss}}
    _, task = method_task(UnlearnTask(data, splits, dataclasses.replace(tiny_cfg, hparams=hparams)), "prunelora")
    model, record = unlearn_one("prunelora", trained_original, task, cpu_ctx)
    assert record["pruned_rows"] > 0 and all(torch.isfinite(p).all() for p in model.parameters())


def test_a_bad_forget_loss_is_one_line():
    from prunelora.config import load_config
    from prunelora.errors import UserError
    from prunelora.workflows.resolve import resolve_config

    with pytest.raises(UserError, match="hparams.prunelora.forget_loss"):
        resolve_config(load_config(overrides=["hparams.prunelora.forget_loss=kl"]))
    with pytest.raises(UserError, match="hparams.lora.beta"):
        resolve_config(load_config(overrides=["hparams.lora.beta=0"]))

"""Five formulas (and one text-modality rule) that a one-line change broke while every other test stayed green, each
pinned on hand-built inputs with values worked out by hand in the comments. docs/testing.md lists the change each test
was checked to catch (in a copy of src/ put first on PYTHONPATH)."""

from __future__ import annotations

import importlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunelora.data import ImageData
from prunelora.engine.context import Context
from prunelora.engine.loop import Batch, Recipe, make_optimizer, make_schedule
from prunelora.methods.importance import grad_statistics
from prunelora.metrics.attack import fit_reference, scores
from prunelora.models.pruning import _rule_mask, prune_l2_structured, zero_rows
from prunelora.workflows.experiment import pruned_count

NEGGRAD_PLUS = importlib.import_module("prunelora.methods.neggrad_plus")
SALUN = importlib.import_module("prunelora.methods.salun")

LN2, LN3 = math.log(2.0), math.log(3.0)


# ---------------------------------------------------------------- 1: NegGrad+ weighs retain by beta, forget by 1 - beta


def test_neggrad_plus_loss_is_beta_retain_ce_minus_one_minus_beta_forget_ce(monkeypatch):
    """beta = 0.8 (asymmetric: at 0.5 swapping beta and 1 - beta changes nothing). `fit` is replaced by a spy that
    keeps the objective NegGrad+ trains with; the objective is then evaluated on a hand-made Batch.

    Train set of 8, forget = {0, 5}. The batch holds train rows [5, 2, 7, 0] (rows index the train set, not the
    batch): forget at batch positions 0 and 3, retain at 1 and 2. Two classes; CE of logits (a, 0):
      label 0: ln(1 + e^-a), label 1: ln(1 + e^a).  a = 0 -> ln 2 either label; a = ln 3 -> ln(4/3) (label 0),
      ln 4 (label 1).
      position 0 (forget): (0, 0),    y 1 -> ln 2
      position 1 (retain): (0, 0),    y 0 -> ln 2
      position 2 (retain): (ln 3, 0), y 1 -> ln 4 = 2 ln 2
      position 3 (forget): (ln 3, 0), y 0 -> ln(4/3)
    CE(retain) = (ln 2 + 2 ln 2) / 2 = 1.5 ln 2;  CE(forget) = (ln 2 + ln 4 - ln 3) / 2 = (3 ln 2 - ln 3) / 2
    loss = 0.8 x 1.5 ln 2 - 0.2 x (3 ln 2 - ln 3) / 2 = 1.2 ln 2 - 0.3 ln 2 + 0.1 ln 3 = 0.9 ln 2 + 0.1 ln 3 = 0.733694
    beta and 1 - beta swapped: 0.2 x 1.5 ln 2 - 0.8 x (3 ln 2 - ln 3) / 2 = -0.9 ln 2 + 0.4 ln 3 = -0.184388
    The forget term added instead of subtracted: 1.5 ln 2 - 0.1 ln 3 = 0.929861. The mask read at batch positions
    0..3 instead of the train rows: forget = position 0 alone, another value again.
    """
    captured = {}

    def spy(model, data, index, recipe, ctx, desc="train", objective=None, paired=None, **kw):
        captured.update(objective=objective, index=index, paired=paired)
        return []

    monkeypatch.setattr(NEGGRAD_PLUS, "fit", spy)
    forget_rows = torch.tensor([0, 5])
    mask = torch.zeros(8, dtype=torch.bool)
    mask[forget_rows] = True
    task = SimpleNamespace(
        hparams=SimpleNamespace(beta=0.8), forget_mask=lambda device: mask.to(device),
        unlearn_recipe=lambda: SimpleNamespace(batch_size=2, epochs=1), data=None,
        splits=SimpleNamespace(retain=torch.tensor([1, 2, 3, 4, 6, 7]), forget=forget_rows),
    )
    NEGGRAD_PLUS.neggrad_plus(nn.Linear(1, 2), task, SimpleNamespace(device=torch.device("cpu")))
    objective = captured["objective"]
    assert captured["index"].tolist() == [1, 2, 3, 4, 6, 7] and captured["paired"][0].tolist() == [0, 5]

    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [LN3, 0.0], [LN3, 0.0]])
    batch = Batch(torch.zeros(4, 1), torch.tensor([1, 0, 1, 0]), torch.tensor([5, 2, 7, 0]), 0)
    loss = objective(logits, batch).item()
    assert loss == pytest.approx(0.9 * LN2 + 0.1 * LN3, abs=1e-6)
    assert loss == pytest.approx(0.733694, abs=1e-6)
    assert loss != pytest.approx(-0.9 * LN2 + 0.4 * LN3, abs=1e-3)  # beta and 1 - beta swapped: -0.184388


# ---------------------------------------------------------------- 2: SalUn's saliency is |mean gradient| (power 1)


class _Coded(nn.Module):
    """Two logits (s, 0) with s = sum_j w_j c_j(x), c read from a table by the image's code (pixel value). w starts
    at 0, so p = (1/2, 1/2) and for label 1 dCE/ds = p_0 = 1/2: a batch's mean-CE gradient is mean_i c(x_i) / 2."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.register_buffer("table", torch.tensor(table))
        self.w = nn.Parameter(torch.zeros(self.table.shape[1]))

    def forward(self, x):
        code = torch.round(x.flatten(1)[:, 0] * 255).long()
        s = self.table[code] @ self.w
        return torch.stack([s, torch.zeros_like(s)], dim=1)


# Forget samples 0..3 (all label 1), batches of 2: [0, 1] and [2, 3]. c per sample (both of a batch alike):
#   batch 1: c = (2, 6, -4, 0) -> gradient g1 = c / 2 = (1, 3, -2, 0)
#   batch 2: c = (2, -6, -4, 0) -> gradient g2 = (1, -3, -2, 0)
# Per weight, over the two batches:
#   |mean g| (SalUn, power 1) = (1, 0, 2, 0)      -> top half {w0, w2}
#   mean g^2 (SSD's Fisher, power 2) = (1, 9, 4, 0) -> top half {w1, w2}
#   mean |g| (abs per batch)            = (1, 3, 2, 0) -> top half {w1, w2}
#   mean g, no abs                      = (1, 0, -2, 0) -> top half {w0, w1 or w3}
_TABLE = [[2.0, 6.0, -4.0, 0.0], [2.0, 6.0, -4.0, 0.0], [2.0, -6.0, -4.0, 0.0], [2.0, -6.0, -4.0, 0.0]]


def _coded_data() -> ImageData:
    x = torch.arange(4, dtype=torch.uint8).view(-1, 1, 1, 1)
    return ImageData("coded", x, torch.ones(4, dtype=torch.long), x.clone(), torch.ones(4, dtype=torch.long),
                     ["a", "b"], (0.0,), (1.0,))


def test_grad_statistics_power_1_is_the_mean_gradients_magnitude_and_power_2_the_mean_square():
    data, ctx = _coded_data(), Context(torch.device("cpu"), seed=0, progress=False)
    one = grad_statistics(_Coded(_TABLE), data, torch.arange(4), ctx, batch_size=2, power=1)
    two = grad_statistics(_Coded(_TABLE), data, torch.arange(4), ctx, batch_size=2, power=2)
    assert one["w"].tolist() == [1.0, 0.0, 2.0, 0.0]
    assert two["w"].tolist() == [1.0, 9.0, 4.0, 0.0]


def test_salun_masks_the_weights_with_the_largest_mean_forget_gradient_magnitude(monkeypatch):
    """share 0.5 of 4 weights -> 2 salient: {w0, w2} (|mean g| = 1, 2). Squared gradients (SSD's importance), |g| per
    batch, or the signed mean would give {w1, w2}, {w1, w2}, {w0, w1|w3}. The mask is read off the gradient hooks
    SalUn installs: inside the (replaced) training, d(sum w)/dw = 1 everywhere, times the mask."""
    seen = {}

    def spy(model, task, ctx, name):
        model.zero_grad()
        model.w.sum().backward()
        seen["mask"] = model.w.grad.tolist()
        return []

    monkeypatch.setattr(SALUN, "train_random_labels", spy)
    model = _Coded(_TABLE)
    task = SimpleNamespace(
        data=_coded_data(), splits=SimpleNamespace(forget=torch.arange(4)), hparams=SimpleNamespace(share=0.5),
        unlearn_recipe=lambda: SimpleNamespace(batch_size=2, epochs=1),
    )
    out = SALUN.salun(model, task, Context(torch.device("cpu"), seed=0, progress=False))
    assert seen["mask"] == [1.0, 0.0, 1.0, 0.0]
    assert out.info["trainable_params"] == 2 and out.info["salient_share"] == 0.5


# ---------------------------------------------------------------- 3: pruning counts round(amount x rows), as torch does


def _five_rows() -> nn.Linear:
    """Rows of L2 norm 5, 1, 3, 4, 2: smallest first 1, 4, 2, 3, 0."""
    layer = nn.Linear(2, 5, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, -2.0]]))
    return layer


# amount x 5 rows: 0.3 -> 1.5 -> round 2 (int 1); 0.7 -> 3.5 -> round 4 (int 3); 0.5 -> 2.5 -> round 2 (Python's
# half-to-even, as torch's _compute_nparams_toprune; half-up or ceil would give 3); 0.25 -> 1.25 -> 1 (ceil 2).
COUNTS = [(0.3, 2), (0.7, 4), (0.5, 2), (0.25, 1)]


@pytest.mark.parametrize(("amount", "k"), COUNTS)
def test_pruning_counts_round_amount_times_rows_as_ln_structured_does(amount, k):
    # torch itself, on the same layer: the count every path must match
    reference = _five_rows()
    prune.ln_structured(reference, "weight", amount=amount, n=2, dim=0)
    assert len(zero_rows(reference.weight)) == k
    smallest = [1, 4, 2, 3, 0]  # by L2 norm
    layer = _five_rows()
    assert sorted(prune_l2_structured(nn.Sequential(layer), ["0"], amount)["0"]) == sorted(smallest[:k])
    # forget-aware head rows: row 3 pruned first, or row 1 never pruned; the rest by L2 norm, same count
    first = [3] + [r for r in smallest if r != 3]
    never = [r for r in smallest if r != 1]
    for rule, order in (("prune", first), ("keep", never)):
        mask = _rule_mask(_five_rows().weight, amount, rule, [3] if rule == "prune" else [1])
        assert sorted(torch.nonzero(mask[:, 0] == 0).flatten().tolist()) == sorted(order[:k])
        layer = _five_rows()
        rows = prune_l2_structured(nn.Sequential(layer), ["0"], amount, {"0": (rule, [3] if rule == "prune" else [1])})
        assert sorted(rows["0"]) == sorted(order[:k])
    assert pruned_count(5, amount, "mask") == k


def test_pruned_count_of_the_remove_mode_is_what_metapruner_keeps():
    """mode=remove: width - int(width x (1 - amount)). 5 rows at 0.25: 5 - int(3.75) = 2 (round would give 1);
    10 at 0.35: 10 - int(6.5) = 4; mask mode at 0.35 x 10 = 3.5 -> round 4 (int 3)."""
    assert pruned_count(5, 0.25, "remove") == 2
    assert pruned_count(10, 0.35, "remove") == 4
    assert pruned_count(10, 0.35, "mask") == 4


def test_pruning_ranks_rows_by_l2_not_l1_norm():
    """Rows (3, 0), (2, 2), (4, 0), (5, 0), (6, 0): L2 norms 3, 2.83, 4, 5, 6 but L1 norms 3, 4, 4, 5, 6. One row of
    five (amount 0.2): L2 prunes row 1, L1 would prune row 0. Both the ln_structured path (a Linear, as a Llama's
    MLP projections are pruned) and the forget-aware rule path."""
    weight = torch.tensor([[3.0, 0.0], [2.0, 2.0], [4.0, 0.0], [5.0, 0.0], [6.0, 0.0]])
    layer = nn.Linear(2, 5, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    assert prune_l2_structured(nn.Sequential(layer), ["0"], 0.2)["0"] == [1]
    assert torch.nonzero(_rule_mask(weight, 0.2, "keep", [4])[:, 0] == 0).flatten().tolist() == [1]
    # two rows (0.4 x 5 = 2): L2 {1, 0}; the head rule keeping row 1 then prunes rows 0 and 2 (norms 3, 4)
    assert sorted(torch.nonzero(_rule_mask(weight, 0.4, "keep", [1])[:, 0] == 0).flatten().tolist()) == [0, 2]


# ---------------------------------------------------------------- 4: the attack pools the variance over S x N - N


def test_fit_reference_divides_by_shadows_times_examples_minus_examples():
    """3 shadows x 2 examples. Example 0: 0, 3, 6 -> mean 3, squared deviations 9 + 0 + 9 = 18; example 1: 10, 13,
    16 -> mean 13, 9 + 0 + 9 = 18. Pooled variance 36 / (3 x 2 - 2) = 36 / 4 = 9, std 3.
    Wrong divisors: shadows 3 -> 12 (std 3.46); all 6 -> 6 (2.45); 6 - 1 = 5 -> 7.2 (2.68); shadows - 1 = 2 -> 18 (4.24).
    Scores of phi (6, 13): |6 - 3| / 3 = 1, 0."""
    phis = np.array([[0.0, 10.0], [3.0, 13.0], [6.0, 16.0]])
    mean, std = fit_reference(phis)
    np.testing.assert_allclose(mean, [3.0, 13.0])
    assert std == pytest.approx(3.0, abs=1e-12)
    np.testing.assert_allclose(scores(np.array([6.0, 13.0]), mean, std), [1.0, 0.0], atol=1e-12)


# ---------------------------------------------------------------- 5: the one-cycle schedule warms up over 25%


def test_onecycle_schedule_peaks_a_quarter_of_the_way_in():
    """OneCycleLR, 100 steps, max lr 1: phase one ends at step pct_start x 100 - 1 = 24 (torch's default 0.3: 29).
    Starts at max / 25 = 0.04; cosine warm-up lr(t) = 1 + (0.04 - 1) / 2 x (cos(pi t / 24) + 1):
      t = 8: 1 - 0.48 x (cos(pi / 3) + 1) = 1 - 0.48 x 1.5 = 0.28 (a linear warm-up would give 0.36);
      t = 12: 1 - 0.48 = 0.52;  t = 24: 1 (the peak), then down."""
    weight = nn.Parameter(torch.zeros(1))
    recipe = Recipe(epochs=1, batch_size=1, optimizer="sgd", lr=1.0, weight_decay=0.0, schedule="onecycle")
    optimizer = make_optimizer([("w", weight)], recipe)
    schedule = make_schedule(optimizer, recipe, 100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert int(np.argmax(lrs)) == 24 and lrs[24] == pytest.approx(1.0, abs=1e-12)
    assert lrs[0] == pytest.approx(0.04, abs=1e-12)
    assert lrs[8] == pytest.approx(0.28, abs=1e-12) and lrs[12] == pytest.approx(0.52, abs=1e-12)
    assert lrs[23] < lrs[24] > lrs[25]

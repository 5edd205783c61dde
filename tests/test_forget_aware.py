"""Forget-aware pruning (`pruning.importance=forget`): each output row scored by its mean |activation| on the forget
set over that on the retain set, the highest pruned, as many as the L2 rule prunes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prunelora.config import load_config
from prunelora.errors import UserError
from prunelora.methods.importance import forget_specificity, mean_abs_outputs
from prunelora.models.pruning import prune_by_scores, prune_l2_structured


def _hand_built() -> nn.Sequential:
    """Row 0 reads only the first input, row 1 only the second, row 2 both; row 1 has the smallest norm."""
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0]]))
    return nn.Sequential(layer)


def test_a_row_only_forget_samples_activate_ranks_first():
    model = _hand_built()
    forget, retain = torch.tensor([[2.0, 0.0], [4.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 2.0]])
    means = [mean_abs_outputs(model, ["0"], [((lambda x=x: model(x)), None)]) for x in (forget, retain)]
    # forget: rows |(3, 0, 3)|; retain: rows (0.5, 1, 2.5) -> ratios 6, ~0, 1.2
    assert means[0]["0"].tolist() == pytest.approx([3.0, 0.0, 3.0]) and means[1]["0"].tolist() == [0.5, 1.0, 2.5]
    scores = forget_specificity(*means)["0"]
    assert scores.argsort(descending=True).tolist() == [0, 2, 1]
    assert prune_by_scores(model, ["0"], 0.3, {"0": scores}) == {"0": [0]}  # round(0.3 x 3) = 1 row: the forget row
    l2 = _hand_built()
    assert prune_l2_structured(l2, ["0"], 0.3) == {"0": [1]}  # the L2 rule takes the smallest row instead


def test_the_score_is_a_ratio_not_a_difference():
    """A row the forget set uses 20x as much as the retain set ranks before one it uses 1.2x as much, though the
    latter's difference of means is larger (0.5 against 0.19): specificity, not volume."""
    scores = forget_specificity({"0": torch.tensor([3.0, 0.2])}, {"0": torch.tensor([2.5, 0.01])})["0"]
    assert scores.tolist() == pytest.approx([3.0 / 2.5, 0.2 / 0.01], rel=1e-4)
    assert scores.argsort(descending=True).tolist() == [1, 0]


def test_only_the_positions_kept_count():
    """Text batches are padded: the pad positions' activations are left out of the means."""
    model = _hand_built()
    x = torch.tensor([[[2.0, 0.0], [0.0, 100.0]]])  # (B 1, L 2, 2): the second position is padding
    keep = torch.tensor([[True, False]])
    means = mean_abs_outputs(model, ["0"], [((lambda: model(x)), keep)])
    assert means["0"].tolist() == pytest.approx([2.0, 0.0, 2.0])


@pytest.mark.parametrize("amount, rows", [(0.3, 5), (0.5, 5), (0.7, 5), (0.5, 32)])
def test_as_many_rows_as_the_l2_rule(amount, rows):
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(4, rows)), nn.Sequential(nn.Linear(4, rows))
    scores = {"0": torch.rand(rows)}
    assert len(prune_by_scores(a, ["0"], amount, scores)["0"]) == len(prune_l2_structured(b, ["0"], amount)["0"])


def test_prunelora_prunes_the_forget_specific_rows_of_the_image_model(tiny_cfg, tiny_data, trained_original,
                                                                       cpu_ctx):
    import copy

    from prunelora.methods import UnlearnTask

    data, splits = tiny_data
    cfg = copy.deepcopy(tiny_cfg)
    cfg.pruning = dataclasses.replace(cfg.pruning, importance="forget")
    aware, plain = UnlearnTask(data, splits, cfg), UnlearnTask(data, splits, tiny_cfg)
    a, b = copy.deepcopy(trained_original), copy.deepcopy(trained_original)
    rows_aware, rows_l2 = aware.prune(a, cpu_ctx), plain.prune(b, cpu_ctx)
    assert rows_aware.keys() == rows_l2.keys()
    assert all(len(rows_aware[k]) == len(rows_l2[k]) for k in rows_aware)
    assert rows_aware != rows_l2  # the same counts, other rows


@pytest.mark.parametrize("override, message", [
    ("pruning.importance=fisher", "pruning.importance"),
    ("pruning.mode=remove", "pruning.importance=forget takes pruning.mode=mask"),
    ("pruning.forget_head_rows=keep", "pruning.importance=forget takes pruning.mode=mask"),
])
def test_bad_combinations_are_one_line(override, message):
    extra = [] if "fisher" in override else ["pruning.importance=forget"]
    with pytest.raises(UserError, match=message):
        load_config(overrides=[*extra, override])


def test_an_mlp_channel_is_scored_by_every_weight_it_owns():
    """Channel 0's gate and up rows are the smallest, but its down column is the largest: by the norm of all three
    it stays, and channel 1 (small everywhere) goes; the down projection loses the matching column."""
    from prunelora.models.pruning import remove_llama_mlp

    mlp = nn.Module()
    mlp.gate_proj, mlp.up_proj, mlp.down_proj = nn.Linear(2, 4, bias=False), nn.Linear(2, 4, bias=False), \
        nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        for linear in (mlp.gate_proj, mlp.up_proj):
            linear.weight.copy_(torch.tensor([[0.1, 0.0], [0.2, 0.0], [1.0, 0.0], [1.0, 0.0]]))
        mlp.down_proj.weight.copy_(torch.tensor([[10.0, 0.3, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    assert remove_llama_mlp(mlp, 0.25) == (4, 3)
    assert mlp.down_proj.weight[0].tolist() == pytest.approx([10.0, 1.0, 2.0])
    assert mlp.gate_proj.weight[:, 0].tolist() == pytest.approx([0.1, 1.0, 1.0]) and mlp.up_proj.out_features == 3

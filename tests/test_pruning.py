"""Structured L2 pruning on layers with hand-set weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunelora.models.pruning import count_zero_rows, prune_l2_structured, zero_rows


def _conv() -> nn.Conv2d:
    """Conv2d(2 -> 6, 3x3): row norms chosen so that L2 and L1 orderings disagree."""
    conv = nn.Conv2d(2, 6, 3, bias=True)
    w = torch.zeros(6, 2, 3, 3)
    w[0] = 1.0  # 18 ones: L2 = sqrt(18) = 4.24 (L1 = 18)
    w[1, 0, 0, 0] = 5.0  # L2 = 5 (L1 = 5)
    w[2, 1, 2, 2] = -10.0  # L2 = 10
    w[3] = 0.1  # L2 = 0.42
    w[4, 0, 1, 1] = -4.5  # L2 = 4.5 (L1 = 4.5)
    w[5] = -2.0  # L2 = 8.49
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(torch.arange(6.0) + 1)
    return conv


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()
        self.block = nn.Sequential(nn.Flatten(), nn.Linear(6 * 2 * 2, 4))
        self.fc = nn.Linear(4, 10)
        norms = torch.tensor([7.0, 2.0, 9.0, 1.0, 5.0, 10.0, 3.0, 8.0, 4.0, 6.0])
        direction = torch.tensor([1.0, -2.0, 2.0, 0.0]) / 3.0  # unit L2 norm
        with torch.no_grad():
            self.fc.weight.copy_(norms[:, None] * direction)

    def forward(self, x):
        return self.fc(self.block(self.conv(x)))


def test_conv_rows_with_smallest_l2_norm_are_zeroed():
    net = _Net()
    before = net.conv.weight.detach().clone()
    pruned = prune_l2_structured(net, ["conv"], 0.5)
    # 3 of 6 rows by L2: rows 3 (0.42), 0 (4.24), 4 (4.5); by L1 it would have been 3, 4, 1
    assert pruned == {"conv": [0, 3, 4]}
    w = net.conv.weight.detach()
    assert torch.all(w[[0, 3, 4]] == 0)
    torch.testing.assert_close(w[[1, 2, 5]], before[[1, 2, 5]], rtol=0, atol=0)
    torch.testing.assert_close(net.conv.bias.detach(), torch.arange(6.0) + 1, rtol=0, atol=0)  # bias untouched


def test_linear_half_of_ten_rows():
    net = _Net()
    before = net.fc.weight.detach().clone()
    pruned = prune_l2_structured(net, ["fc"], 0.5)
    # norms [7, 2, 9, 1, 5, 10, 3, 8, 4, 6]: the five smallest (1..5) are rows 3, 1, 6, 8, 4
    assert pruned == {"fc": [1, 3, 4, 6, 8]}
    assert zero_rows(net.fc.weight) == [1, 3, 4, 6, 8]
    keep = [0, 2, 5, 7, 9]
    torch.testing.assert_close(net.fc.weight.detach()[keep], before[keep], rtol=0, atol=0)


def test_several_layers_and_nested_names():
    net = _Net()
    pruned = prune_l2_structured(net, ["conv", "block.1", "fc"], 0.5)
    assert list(pruned) == ["conv", "block.1", "fc"]
    assert len(pruned["block.1"]) == 2  # 4 rows -> 2
    assert count_zero_rows(net, pruned) == (3 + 2 + 5, 3 + 2 + 5)


def test_pruning_is_permanent_no_reparametrisation_left():
    net = _Net()
    keys = set(net.state_dict())
    prune_l2_structured(net, ["conv", "fc"], 0.5)
    assert set(net.state_dict()) == keys  # no weight_orig / weight_mask
    for module in (net.conv, net.fc):
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
        assert isinstance(module.weight, nn.Parameter) and "weight" in module._parameters
        assert len(module._forward_pre_hooks) == 0
        assert module.weight.requires_grad
    # a later write to a pruned row is what the forward pass uses (no mask recomputed on forward)
    with torch.no_grad():
        net.fc.weight[3] = 1.0
    x = torch.randn(2, 4)
    expected = x @ net.fc.weight.detach().T + net.fc.bias.detach()
    torch.testing.assert_close(net.fc(x), expected)
    assert 3 not in zero_rows(net.fc.weight)


def test_amount_zero_prunes_nothing_and_bad_amounts_raise():
    net = _Net()
    before = net.fc.weight.detach().clone()
    assert prune_l2_structured(net, ["fc"], 0.0) == {"fc": []}
    torch.testing.assert_close(net.fc.weight.detach(), before, rtol=0, atol=0)
    for amount in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            prune_l2_structured(net, ["fc"], amount)


def test_zero_rows_and_count_zero_rows():
    w = torch.tensor([[0.0, 0.0], [1e-30, 0.0], [0.0, -0.0], [2.0, -2.0]])
    assert zero_rows(w) == [0, 2]  # a tiny non-zero value is not zero
    assert zero_rows(torch.zeros(3, 2, 1, 1)) == [0, 1, 2]

    net = _Net()
    pruned = prune_l2_structured(net, ["fc"], 0.5)
    assert count_zero_rows(net, pruned) == (5, 5)
    with torch.no_grad():
        net.fc.weight[pruned["fc"][0], 0] = 0.5  # training writes into one pruned row
    assert count_zero_rows(net, pruned) == (4, 5)


@pytest.mark.parametrize("rule, rows, expected", [
    ("keep", [0], [1, 2]),  # row 0 has the smallest norm but is kept: the next two go
    ("prune", [3], [3, 0]),  # row 3 has the largest norm but is pruned first, then the smallest
    ("keep", [], [0, 1]),
])
def test_forget_row_rules(rule, rows, expected):
    layer = nn.Linear(2, 5, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [9.0, 0.0], [5.0, 0.0]]))
    model = nn.Sequential(layer)
    pruned = prune_l2_structured(model, ["0"], 0.4, {"0": (rule, rows)})
    assert sorted(pruned["0"]) == sorted(expected)
    assert zero_rows(layer.weight) == sorted(expected)

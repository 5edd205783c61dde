"""Convolutions over maps within their kernel's reach as one matrix product: the same function as the convolution,
taken only where it applies."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.models.small_maps import SmallMapConv2d, _SmallMapConv, taps_matrix, use_small_map_convs, within_reach
from prunelora.store.cache import execution
from prunelora.workflows.experiment import make_context


@pytest.mark.parametrize("kernel, padding, stride, size, expected", [
    ((3, 3), (1, 1), (1, 1), (2, 2), True),  # the default's last stage
    ((3, 3), (1, 1), (1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1), (1, 2), True),
    ((5, 5), (2, 2), (1, 1), (3, 3), True),
    ((1, 1), (0, 0), (1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1), (3, 3), False),  # corners read padding only through some taps: a convolution
    ((3, 3), (1, 1), (1, 1), (2, 3), False),
    ((3, 3), (1, 1), (2, 2), (2, 2), False),  # stride 2
    ((3, 3), (0, 0), (1, 1), (1, 1), False),  # not "same" padding
    ((2, 2), (1, 1), (1, 1), (1, 1), False),  # even kernel
    ((3, 3), "same", (1, 1), (2, 2), False),  # padding given as a word
])
def test_within_reach(kernel, padding, stride, size, expected):
    assert within_reach(kernel, padding, stride, (1, 1), size) is expected
    assert within_reach(kernel, padding, stride, (2, 2), size) is False  # dilation


def test_taps_matrix_by_hand():
    weight = torch.arange(9.0).view(1, 1, 3, 3)  # w[a, b] = 3a + b
    # row (i, j) = output position, column (m, n) = input position: w[1 + m - i, 1 + n - j]
    expected = torch.tensor([
        [4.0, 5.0, 7.0, 8.0],  # output (0, 0) reads inputs (0,0) (0,1) (1,0) (1,1)
        [3.0, 4.0, 6.0, 7.0],  # output (0, 1)
        [1.0, 2.0, 4.0, 5.0],  # output (1, 0)
        [0.0, 1.0, 3.0, 4.0],  # output (1, 1)
    ])
    assert torch.equal(taps_matrix(weight, (2, 2)), expected)
    two = torch.stack([weight[0], -weight[0]])  # (O=2, C=1): rows (i, j, o) interleave the outputs
    assert torch.equal(taps_matrix(two, (2, 2))[0::2], expected)
    assert torch.equal(taps_matrix(two, (2, 2))[1::2], -expected)
    assert torch.equal(taps_matrix(two.contiguous(memory_format=torch.channels_last), (2, 2)), taps_matrix(two, (2, 2)))


@pytest.mark.parametrize("channels, out, size, kernel", [(3, 4, (2, 2), 3), (2, 3, (1, 1), 3), (2, 2, (3, 3), 5),
                                                          (3, 2, (2, 2), 5), (2, 3, (1, 2), 3)])
def test_the_product_is_the_convolution_and_its_gradients(channels, out, size, kernel):
    torch.manual_seed(0)
    x = torch.randn(2, channels, *size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out, channels, kernel, kernel, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_SmallMapConv.apply(x, weight), F.conv2d(x, weight, None, 1, kernel // 2),
                               rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(_SmallMapConv.apply, (x, weight))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_small_map_conv_matches_conv2d_and_keeps_the_layouts(memory_format):
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=True).to(memory_format=memory_format)
    small = use_small_map_convs(copy.deepcopy(conv))
    assert type(small) is SmallMapConv2d and small.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(8, 16, 2, 2).contiguous(memory_format=memory_format).requires_grad_()
    ref, got = conv(x), small(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=memory_format)
    upstream = torch.randn_like(ref)
    grad_x_ref, = torch.autograd.grad(ref, x, upstream, retain_graph=True)
    got.backward(upstream)
    torch.testing.assert_close(x.grad, grad_x_ref, rtol=1e-5, atol=1e-5)
    assert x.grad.is_contiguous(memory_format=memory_format)
    ref.backward(upstream)
    torch.testing.assert_close(small.weight.grad, conv.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(small.bias.grad, conv.bias.grad, rtol=1e-5, atol=1e-5)
    assert small.weight.grad.stride() == small.weight.stride()  # laid out as the weight: kept without a copy


def test_elsewhere_it_is_the_convolution():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    small = use_small_map_convs(copy.deepcopy(conv))
    for shape in [(2, 4, 3, 3), (2, 4, 5, 5)]:  # maps beyond the kernel's reach
        x = torch.randn(shape)
        assert torch.equal(small(x), conv(x))
    strided = use_small_map_convs(nn.Conv2d(4, 6, 3, stride=2, padding=1))
    x = torch.randn(2, 4, 2, 2)
    assert torch.equal(strided(x), F.conv2d(x, strided.weight, strided.bias, 2, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the convolution in bf16, as nn.Conv2d runs it
        assert torch.equal(small(x), conv(x)) and small(x).dtype == torch.bfloat16


def test_only_plain_conv2d_modules_change():
    class Own(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), Own(2, 2, 3, padding=1), nn.Linear(2, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_small_map_convs(model)
    assert [type(m) for m in model] == [SmallMapConv2d, Own, nn.Linear]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_cpu_default_runs_small_maps_as_products_and_the_cache_knows():
    ctx = make_context(load_config(overrides=["device=cpu"]), progress=False)
    assert ctx.small_maps and execution(ctx)["small_map_convs"] is True
    assert type(ctx.prepare_model(nn.Sequential(nn.Conv2d(1, 2, 3)))[0]) is SmallMapConv2d
    off = make_context(load_config(overrides=["device=cpu", "small_map_convs=false"]), progress=False)
    assert type(off.prepare_model(nn.Sequential(nn.Conv2d(1, 2, 3)))[0]) is nn.Conv2d
    assert execution(off)["small_map_convs"] is False
    assert type(Context(torch.device("cpu")).prepare_model(nn.Conv2d(1, 2, 3))) is nn.Conv2d  # the dataclass: off


def test_lora_on_small_map_convolutions_keeps_its_dropout_inside_the_down_projection():
    from prunelora.models.adapters import DropoutConv2d, FastDropout, add_lora

    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    wrapped = add_lora(use_small_map_convs(model), ["0", "2"], 2, 4, 0.1, [], 0)
    downs = [m for m in wrapped.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2]
    assert len(downs) == 2 and all(type(d) is DropoutConv2d for d in downs)  # peft builds them as the base's class
    assert not any(isinstance(m, FastDropout) for name, m in wrapped.named_modules() if "lora_dropout" in name)

"""Convolutions over maps within their kernel's reach, as one matrix product (CPU).

A stride-1 "same" convolution (odd kernel k, padding (k - 1) / 2) over a map of at most padding + 1 positions a
side lets every output position read every input position, each through one tap of the kernel. A 3x3 convolution
over the 2x2 maps of the default's last stage (12x12 images arrive there at 2x2) is such a layer: five of each
output's nine taps read padding zeros, and oneDNN's AVX2 weight gradient runs these shapes at about 100 GFLOP/s
against 180-210 for the stage's larger maps (docs/performance.md). Written as a linear layer on the flattened
input (N, H*W*C) whose (H*W*O, H*W*C) weight is assembled from the kernel's taps, the layer computes only the taps
that read the image, at the matrix-product rate: a Fine-tune step of the default 11-18% faster with AVX2 kernels,
1-10% with AVX-512 ones; LoRA's steps, whose base weights take no gradient, within 3%.

The function is the convolution's; fp32 sums run in another order, so results differ in the last digits.
`SmallMapConv2d` takes this path only where it applies (the CPU, fp32 or fp64, no autocast, one group, no dilation,
zero padding); everywhere else it is `nn.Conv2d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def within_reach(kernel: tuple[int, int], padding, stride, dilation, size: tuple[int, int]) -> bool:
    """Whether a convolution with these settings over a map of `size` reads every input position from every output
    position: stride 1, no dilation, "same" zero padding of an odd kernel, and each side at most padding + 1."""
    if not isinstance(padding, tuple) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return False
    return all(k % 2 == 1 and 2 * p == k - 1 and 0 < s <= p + 1 for k, p, s in zip(kernel, padding, size))


def taps_matrix(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The (H*W*O, H*W*C) matrix of a "same" convolution with `weight` (O, C, kh, kw) over an H x W map within its
    reach, as a linear layer's weight: row (i, j, o) and column (m, n, c) hold weight[o, c, ph + m - i, pw + n - j],
    the tap through which output position (i, j) reads input position (m, n). Its blocks are read with the channels
    innermost, as a channels-last weight lies in memory."""
    h, w = size
    out_ch, in_ch, kh, kw = weight.shape
    ph, pw = kh // 2, kw // 2
    taps = weight.permute(0, 2, 3, 1)  # (O, kh, kw, C)
    blocks = [taps[:, ph - i : ph - i + h, pw - j : pw - j + w] for i in range(h) for j in range(w)]  # (O, H, W, C)
    return torch.stack(blocks).reshape(h * w * out_ch, h * w * in_ch)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W*C): free for a channels-last tensor."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _maps(rows: torch.Tensor, like: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, H*W*C) -> (N, C, H, W) in the memory format of `like` (H, W from `like`)."""
    n, _, h, w = like.shape
    out = rows.view(n, h, w, channels).permute(0, 3, 1, 2)  # channels-last strides
    return out if like.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class _SmallMapConv(torch.autograd.Function):
    """y = conv2d(x, weight) as a linear layer of `taps_matrix` on x's rows; saves x and the weight (what a
    convolution saves), and builds the matrix again in the backward pass rather than keeping it (H*W times the
    weight's size)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _maps(F.linear(_rows(x), taps_matrix(weight, x.shape[2:])), x, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        size = x.shape[2:]
        grad_rows = _rows(grad)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _maps(grad_rows @ taps_matrix(weight, size), x, x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = _fold_taps(grad_rows.t() @ _rows(x), weight, size)
        return grad_x, grad_w


def _fold_taps(grad_matrix: torch.Tensor, weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The weight's gradient from the gradient of its `taps_matrix`: each tap sums the entries it filled. Laid out
    as the weight is, so that autograd keeps it without a copy."""
    h, w = size
    out_ch, in_ch, kh, kw = weight.shape
    ph, pw = kh // 2, kw // 2
    blocks = grad_matrix.view(h * w, out_ch, h, w, in_ch)
    grad = torch.zeros_like(weight)  # the weight's memory format
    taps = grad.permute(0, 2, 3, 1)  # (O, kh, kw, C), a view
    for q, (i, j) in enumerate((i, j) for i in range(h) for j in range(w)):
        taps[:, ph - i : ph - i + h, pw - j : pw - j + w] += blocks[q]
    return grad


class SmallMapConv2d(nn.Conv2d):
    """`nn.Conv2d` that runs as one matrix product over maps within its kernel's reach on the CPU (module doc)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self._small_map(x, weight):
            return super()._conv_forward(x, weight, bias)
        out = _SmallMapConv.apply(x, weight)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    def _small_map(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu" and x.layout == torch.strided and x.dim() == 4
            and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype
            and not _cpu_autocast() and self.groups == 1 and self.padding_mode == "zeros"
            and within_reach(self.kernel_size, self.padding, self.stride, self.dilation, tuple(x.shape[2:]))
        )


def _cpu_autocast() -> bool:
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.is_autocast_enabled("cpu")
    return torch.is_autocast_cpu_enabled()


def use_small_map_convs(model: nn.Module) -> nn.Module:
    """Every plain `nn.Conv2d` of `model` becomes a `SmallMapConv2d` (the same module, parameters and state dict)."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = SmallMapConv2d
    return model

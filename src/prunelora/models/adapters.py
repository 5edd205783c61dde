"""LoRA adapters through peft: add them to named layers, train only them (and the head), merge them back.

Three changes to peft's layers, none of which changes what is computed (an element-wise keep mask with
probability 1 - p, scaled by 1 / (1 - p), only in training, on the adapter's input; the update scaled by
alpha / r):
- On the CPU the LoRA input dropout is drawn with a fast generator (`FastDropout`). `torch.nn.Dropout` on the
  CPU spends ~8 ns per element drawing Bernoulli numbers, which made a LoRA epoch of a narrow ResNet 1.8x slower
  than a full fine-tuning epoch. Elsewhere the mask comes from `torch.native_dropout` (one kernel that draws,
  applies and returns it).
- A convolution's down-projection takes the dropout inside (`DropoutConv2d`): it keeps the layer's input, which
  the frozen base convolution keeps anyway, and the 1-byte mask, instead of a dropped-out copy of the input
  (4 bytes per element in fp32). The copy is rebuilt in the backward pass for the adapter's weight gradient.
  With LoRA on every block convolution this copy was the largest cost of LoRA over fine-tuning in activation
  memory. peft's cast of the input to the adapter's dtype is switched off, so under bf16 autocast the input is
  not copied to fp32 first (autocast casts the adapter's convolution as it would any other).
- alpha / r multiplies the up-projection's weight (rank x out numbers) instead of its output (`ScaledUpdate`),
  which removes one full-size element-wise pass from each adapted layer's forward and one from its backward.
  For a power-of-two scale (the presets' 16 / 8 and 32 / 16) the results are bit-identical to peft's.

Per adapted convolution and step, the passes over a full-size activation besides the convolutions went from
twelve (mask drawn, compared, applied, scaled; rebuilt, applied to the gradient; scale and add, forward and
backward; the gradient sum) to five on a GPU. `benchmarks/step_work.py` counts them.
"""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import Conv2d as LoraConv2d
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn import functional as F

from .small_maps import SmallMapConv2d


def masked_scale(x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """x * mask * scale in one kernel on a GPU (the dropout backward's own); the same numbers on the CPU."""
    return torch.ops.aten.native_dropout_backward(x, mask, scale)


class _MaskedScale(torch.autograd.Function):
    """y = x * mask * scale, saving only the 1-byte mask for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return masked_scale(x, mask, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return masked_scale(grad, mask, ctx.scale), None, None


class FastDropout(nn.Module):
    """Element-wise dropout whose CPU mask comes from numpy's PCG64 bytes (about 4x faster than bernoulli_).

    The drop probability is quantised to 1/65536 (16 random bits per element). On other devices (and on the
    CPU when `numpy_on_cpu` is off) it is `torch.native_dropout`, PyTorch's own.
    """

    numpy_on_cpu = True

    def __init__(self, p: float, seed: int):
        super().__init__()
        self.p = p
        self._threshold = round(p * 65536) - 32768  # keep where int16 bits >= threshold
        self._rng = np.random.default_rng(seed)

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    @property
    def scale(self) -> float:
        return 1.0 / (1.0 - self.p)

    def _numpy(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.numpy_on_cpu

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A bool mask shaped like x (CPU), True (kept) with probability 1 - p, laid out in memory as x is.

        The draws fill the mask in x's logical (N, C, H, W) order whatever x's layout, so channels-last gives the
        same mask; laid out as x (channels-last), the three products with it read both in step (1-2% of a LoRA step).
        """
        n = x.numel()
        bits = self._rng.bit_generator.random_raw((n + 3) // 4).view(np.int16)[:n]  # 4 draws per 64 bits
        keep = torch.empty_like(x, dtype=torch.bool)  # x's memory format
        return torch.ge(torch.from_numpy(bits).view(x.shape), self._threshold, out=keep)

    def draw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x * mask * scale, mask) for a fresh mask, outside autograd."""
        if self._numpy(x):
            mask = self.keep_mask(x)
            return masked_scale(x, mask, self.scale), mask
        return torch.native_dropout(x, self.p, True)  # mask in x's memory format (channels-last on CUDA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if not self._numpy(x):
            return nn.functional.dropout(x, self.p, True)
        return _MaskedScale.apply(x, self.keep_mask(x), self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a convolution in here (x's own dtype when autocast is off)."""
    device = x.device.type
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    if device == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else x.dtype
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else x.dtype


class _DroppedConv(torch.autograd.Function):
    """conv2d(x * mask * scale, weight) for a fresh dropout mask; saves x and the mask, not the product.

    The backward pass rebuilds the product and calls the same `convolution_backward` autograd would, so
    fp32 results are bit-identical to dropout followed by the convolution.
    """

    @staticmethod
    def forward(ctx, x, weight, drop, stride, padding, dilation, groups):
        dtype = _compute_dtype(x)
        dropped, mask = drop.draw(x)
        ctx.save_for_backward(x, mask, weight)
        ctx.conf = (drop.scale, stride, padding, dilation, groups, dtype)
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(dropped.to(dtype), weight.to(dtype), None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, mask, weight = ctx.saved_tensors
        scale, stride, padding, dilation, groups, dtype = ctx.conf
        dropped = masked_scale(x, mask, scale).to(dtype)
        want = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        grad_dropped, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, dropped, weight.to(dtype), None, stride, padding, dilation, False, [0, 0], groups, want
        )
        grad_x = None if grad_dropped is None else masked_scale(grad_dropped, mask, scale).to(x.dtype)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return grad_x, grad_weight, None, None, None, None, None


class DropoutConv2d(nn.Conv2d):
    """A LoRA down-projection (bias-free Conv2d) applied to `input_dropout(x)`; see `_DroppedConv`."""

    input_dropout: FastDropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_dropout.active:
            return super().forward(x)
        return _DroppedConv.apply(
            x, self.weight, self.input_dropout, self.stride, self.padding, self.dilation, self.groups
        )


class ScaledUpdate:
    """peft's LoRA forward, base(x) + up(down(dropout(x))) * alpha / r, with alpha / r applied to the
    up-projection's weight rather than to its full-size output. Used for the one case the unlearning
    methods run (one active, unmerged, plain adapter without a bias); anything else goes to peft's forward.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        key = self._plain_adapter() if not (args or kwargs) else None
        if key is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        down = self.lora_A[key](self.lora_dropout[key](x))
        return result + self._up(down, self.lora_B[key].weight * self.scaling[key])

    def _plain_adapter(self) -> str | None:
        if self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        key = self.active_adapters[0]
        plain = (
            key in self.lora_A
            and key not in getattr(self, "lora_variant", {})
            and not getattr(self, "use_dora", {}).get(key, False)
            and type(self.lora_B[key]) in (nn.Conv2d, nn.Linear)
            and self.lora_B[key].bias is None
        )
        return key if plain else None


class ScaledConv2d(ScaledUpdate, LoraConv2d):
    def _up(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.lora_B[self.active_adapters[0]]._conv_forward(h, weight, None)


class ScaledLinear(ScaledUpdate, LoraLinear):
    def _up(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(h, weight)


_SCALED = {LoraConv2d: ScaledConv2d, LoraLinear: ScaledLinear}


def add_lora(
    model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float, train_modules: list[str], seed: int
) -> PeftModel:
    """Wrap `targets` with LoRA adapters; only the adapters and `train_modules` (e.g. the head) train. Every
    other parameter is frozen, the biases of the adapted layers too (peft's bias="none")."""
    config = PeftLoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, modules_to_save=train_modules or None,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    for i, layer in enumerate(m for m in peft_model.modules() if isinstance(m, LoraLayer)):
        layer.cast_input_dtype_enabled = False  # autocast decides the adapter's compute dtype, as for the base
        layer.__class__ = _SCALED.get(type(layer), type(layer))  # same state; alpha / r moves onto the weight
        for key, old in layer.lora_dropout.items():
            if not isinstance(old, nn.Dropout):
                continue
            drop = FastDropout(old.p, seed=seed * 1000 + i)
            down = layer.lora_A[key]
            # peft builds the down-projection as the base layer's class: nn.Conv2d, or SmallMapConv2d on the CPU
            plain = type(down) in (nn.Conv2d, SmallMapConv2d)
            if plain and down.bias is None and down.padding_mode == "zeros" and not isinstance(down.padding, str):
                down.__class__ = DropoutConv2d  # same parameters and state-dict keys; dropout moves inside
                down.input_dropout = drop
                layer.lora_dropout[key] = nn.Identity()
            else:
                layer.lora_dropout[key] = drop
    return peft_model


def merge_lora(peft_model: PeftModel) -> nn.Module:
    """Fold the adapters into the base weights and return the plain model (same class as before wrapping)."""
    return peft_model.merge_and_unload()

"""LoRA through peft: what trains, what stays frozen, merging, the CPU dropout, and the adapted layers' forward
(alpha / r on the up-projection's weight; the GPU's dropout operators, run here on the CPU)."""

from __future__ import annotations

import re

import pytest
import torch
from peft.tuners.lora import Conv2d as LoraConv2d
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from prunelora.config import ModelConfig
from prunelora.models import HEAD, create_model, select_layers
from prunelora.models.adapters import DropoutConv2d, FastDropout, ScaledConv2d, ScaledLinear, add_lora, merge_lora


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _mlp_lora(dropout: float = 0.0):
    torch.manual_seed(0)
    return add_lora(_Mlp(), "^(?:fc1|fc2)$", r=2, alpha=4, dropout=dropout, train_modules=[HEAD], seed=0)


def _resnet_lora(dropout: float = 0.0):
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="resnet18-tiny", width=4), num_classes=5, in_chans=1, image_size=8)
    layers = select_layers(model, "resnet", "paper", "lora")
    pattern = "^(?:" + "|".join(re.escape(n) for n in layers) + ")$"
    return add_lora(model, pattern, r=2, alpha=4, dropout=dropout, train_modules=[HEAD], seed=0), layers


def _is_adapter_or_head(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or f"{HEAD}.modules_to_save." in name


@pytest.mark.parametrize("build", ["mlp", "resnet"])
def test_only_adapters_and_head_train(build):
    model = _mlp_lora() if build == "mlp" else _resnet_lora()[0]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert trainable and all(_is_adapter_or_head(n) for n in trainable)
    assert not any(_is_adapter_or_head(n) for n in frozen)
    assert any(".lora_A." in n for n in trainable) and any(".lora_B." in n for n in trainable)
    assert any(f"{HEAD}.modules_to_save." in n for n in trainable)
    assert any(f"{HEAD}.original_module." in n for n in frozen)


def test_resnet_adapters_on_every_block_conv():
    model, layers = _resnet_lora()
    adapted = {n.split(".lora_A.")[0].removeprefix("base_model.model.") for n, _ in model.named_parameters()
               if ".lora_A." in n}
    assert adapted == set(layers)
    assert "conv1" not in adapted  # the stem is pruned but not adapted


@pytest.mark.parametrize("build", ["mlp", "resnet"])
def test_training_step_leaves_base_weights_unchanged(build):
    model = _mlp_lora() if build == "mlp" else _resnet_lora()[0]
    x = torch.randn(8, 6) if build == "mlp" else torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 3, (8,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):  # lora_B starts at zero: the second step also moves lora_A
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, p in model.named_parameters():
        if _is_adapter_or_head(name):
            assert not torch.equal(p.detach(), before[name]), f"{name} did not train"
        else:
            torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0, msg=f"{name} changed")


@pytest.mark.parametrize("build", ["mlp", "resnet"])
def test_merged_model_matches_adapted_model(build):
    model = _mlp_lora(dropout=0.1) if build == "mlp" else _resnet_lora(dropout=0.1)[0]
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _is_adapter_or_head(name):
                p.add_(torch.randn_like(p) * 0.3)  # non-zero adapters and a changed head
    x = torch.randn(4, 6) if build == "mlp" else torch.randn(4, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        adapted = model(x)
        with model.disable_adapter():
            base = model(x)
    merged = merge_lora(model)
    merged.eval()
    assert type(merged).__name__ in ("_Mlp", "CifarResNet")
    assert not any("lora" in n or "modules_to_save" in n for n, _ in merged.named_parameters())
    assert type(getattr(merged, HEAD)) is nn.Linear
    with torch.no_grad():
        out = merged(x)
    torch.testing.assert_close(out, adapted, atol=1e-5, rtol=1e-5)
    assert (out - base).abs().max() > 1e-3  # the adapters changed the function


def test_head_adapter_freezes_head_weight_and_bias():
    """LoRA on the head with nothing trained in full (ViT `authors_code`): only the head's A and B train and get
    gradients; merged, the head weight moved and its bias did not."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="vit-tiny", width=16, depth=2, heads=2), num_classes=5, in_chans=1, image_size=8)
    layers = select_layers(model, "vit", "authors_code", "lora", depth=2)
    weight, bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    wrapped = add_lora(model, "^(?:head)$", r=4, alpha=8, dropout=0.1, train_modules=[], seed=0)
    adapter = ["base_model.model.head.lora_A.default.weight", "base_model.model.head.lora_B.default.weight"]
    assert layers == [HEAD] and [n for n, p in wrapped.named_parameters() if p.requires_grad] == adapter
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    wrapped.train()
    for _ in range(2):  # lora_B starts at zero: lora_A gets a gradient from the second step on
        opt.zero_grad()
        nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()
    assert sorted(n for n, p in wrapped.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0) == adapter
    merged = merge_lora(wrapped)
    assert (merged.head.weight - weight).abs().max() > 1e-3
    torch.testing.assert_close(merged.head.bias.detach(), bias, rtol=0, atol=0)


def test_adapter_on_multihead_attention_out_proj_is_never_called():
    """The authors' ViT bug, documented: peft wraps nn.MultiheadAttention.out_proj, but the attention reads
    out_proj.weight directly, so the adapter changes no output and gets no gradient."""

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    torch.manual_seed(0)
    wrapped = add_lora(Attn(), "^(?:attn.out_proj)$", r=2, alpha=4, dropout=0.0, train_modules=[HEAD], seed=0)
    with torch.no_grad():  # a non-zero adapter: were it called, the output would change
        for name, p in wrapped.named_parameters():
            if ".lora_" in name:
                p.normal_()
    x = torch.randn(2, 4, 8)
    wrapped.eval()
    with torch.no_grad():
        adapted = wrapped(x)
        with wrapped.disable_adapter():
            base = wrapped(x)
    torch.testing.assert_close(adapted, base, rtol=0, atol=0)
    wrapped.train()
    wrapped(x).sum().backward()
    grads = {n: p.grad for n, p in wrapped.named_parameters() if p.requires_grad}
    assert [n for n, g in grads.items() if ".lora_" in n and g is not None] == []
    assert all(grads[n] is not None for n in grads if "modules_to_save" in n)  # the head does train


def test_lora_dropout_is_fast_dropout_with_per_layer_seed():
    model, layers = _resnet_lora(dropout=0.1)
    drops = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert len(drops) == len(layers) and all(d.p == 0.1 for d in drops)
    # every adapted conv carries its dropout inside the down-projection
    downs = [m for m in model.modules() if isinstance(m, DropoutConv2d)]
    assert len(downs) == len(layers) and {id(d.input_dropout) for d in downs} == {id(d) for d in drops}
    for d in drops:
        d.train()
    x = torch.ones(1000)
    masks = [(d(x) != 0) for d in drops[:3]]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


def test_fast_dropout_eval_is_identity():
    d = FastDropout(0.3, seed=0).eval()
    x = torch.randn(100)
    assert d(x) is x
    d0 = FastDropout(0.0, seed=0).train()
    assert d0(x) is x


def test_fast_dropout_train_statistics():
    p = 0.3
    d = FastDropout(p, seed=0).train()
    x = torch.ones(1_000_000)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.003)  # binomial sd = 0.00046
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased in expectation


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fast_dropout_rate_for_several_p(p):
    y = FastDropout(p, seed=3).train()(torch.ones(200_000))
    assert (y == 0).float().mean().item() == pytest.approx(p, abs=0.006)


def test_fast_dropout_gradient_is_mask_times_scale():
    p = 0.25
    d = FastDropout(p, seed=7).train()
    x = torch.randn(4, 1000, requires_grad=True)
    y = d(x)
    mask = (y != 0).float()
    assert y.shape == x.shape
    torch.testing.assert_close(y, x.detach() * mask / (1 - p))
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream * mask / (1 - p))


def test_fast_dropout_mask_is_laid_out_as_its_input_and_draws_the_same_values():
    x = torch.randn(3, 5, 4, 6)
    last = x.contiguous(memory_format=torch.channels_last)
    plain, cl = (FastDropout(0.4, seed=9).train().keep_mask(t) for t in (x, last))
    assert plain.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert torch.equal(plain, cl)  # the same element (n, c, h, w) is dropped in either layout
    assert 0 < (~cl).sum() < cl.numel()


def test_fast_dropout_seeded():
    x = torch.ones(10_000)
    a, b, c = (FastDropout(0.5, seed=s).train() for s in (11, 11, 12))
    first_a, first_b, first_c = a(x), b(x), c(x)
    torch.testing.assert_close(first_a, first_b, rtol=0, atol=0)
    assert not torch.equal(first_a, first_c)
    assert not torch.equal(a(x), first_a)  # the next call draws a new mask


def _reference_and_fused(kernel: int, stride: int, padding: int, seed: int = 5):
    """The same down-projection twice: dropout then nn.Conv2d (what peft runs), and DropoutConv2d."""
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 3, kernel, stride, padding, bias=False)
    fused = nn.Conv2d(6, 3, kernel, stride, padding, bias=False)
    fused.load_state_dict(plain.state_dict())
    fused.__class__ = DropoutConv2d
    fused.input_dropout = FastDropout(0.2, seed=seed).train()
    return FastDropout(0.2, seed=seed).train(), plain, fused


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (1, 2, 0), (3, 2, 1)])
def test_dropout_conv_is_bit_identical_to_dropout_then_conv(kernel, stride, padding):
    drop, plain, fused = _reference_and_fused(kernel, stride, padding)
    x1 = torch.randn(2, 6, 9, 9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = plain(drop(x1)), fused(x2)
    upstream = torch.randn_like(y1)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    assert torch.equal(y1, y2) and torch.equal(x1.grad, x2.grad) and torch.equal(plain.weight.grad, fused.weight.grad)


def test_dropout_conv_keeps_the_input_and_mask_not_a_dropped_copy():
    *_, fused = _reference_and_fused(3, 1, 1)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused(x)
    activation_sized = [t for t in saved if t.shape == x.shape]
    assert len(activation_sized) == 2  # x itself and the bool mask
    assert any(t.data_ptr() == x.data_ptr() for t in activation_sized)
    assert {t.dtype for t in activation_sized} == {torch.float32, torch.bool}


def test_dropout_conv_under_bf16_autocast_matches_the_reference():
    drop, plain, fused = _reference_and_fused(3, 1, 1)
    x1 = torch.randn(2, 6, 9, 9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = plain(drop(x1)), fused(x2)
    assert y1.dtype == y2.dtype == torch.bfloat16
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    (y1.float() * 3).sum().backward()
    (y2.float() * 3).sum().backward()
    assert fused.weight.grad.dtype == torch.float32 and x2.grad.dtype == torch.float32
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=0.02, atol=0.02)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=0.02, atol=0.02)


def test_dropout_conv_in_eval_mode_is_the_plain_conv():
    _, plain, fused = _reference_and_fused(3, 1, 1)
    fused.eval()
    x = torch.randn(2, 6, 9, 9)
    assert torch.equal(fused(x), plain(x))


# ---------------------------------------------------------------- the GPU's dropout operators, on the CPU


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (1, 2, 0)])
def test_dropout_conv_with_native_dropout_is_dropout_then_conv(kernel, stride, padding, monkeypatch):
    """With `torch.native_dropout` drawing the mask (the path a GPU takes), the fused down-projection equals
    dropout with that same mask followed by the plain convolution, forward and backward, bit for bit."""
    monkeypatch.setattr(FastDropout, "numpy_on_cpu", False)
    _, plain, fused = _reference_and_fused(kernel, stride, padding)
    x1 = torch.randn(2, 6, 9, 9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    torch.manual_seed(42)
    _, mask = torch.native_dropout(x1.detach(), 0.2, True)
    assert 0.1 < 1 - mask.float().mean().item() < 0.3
    y1 = plain(x1 * mask * (1 / 0.8))
    torch.manual_seed(42)
    y2 = fused(x2)
    upstream = torch.randn_like(y1)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    assert torch.equal(y1, y2) and torch.equal(x1.grad, x2.grad) and torch.equal(plain.weight.grad, fused.weight.grad)


def test_fast_dropout_without_numpy_is_torch_dropout(monkeypatch):
    monkeypatch.setattr(FastDropout, "numpy_on_cpu", False)
    x = torch.randn(50, 40)
    torch.manual_seed(3)
    ref = nn.functional.dropout(x, 0.3, True)
    torch.manual_seed(3)
    assert torch.equal(FastDropout(0.3, seed=0).train()(x), ref)


# ---------------------------------------------------------------- alpha / r on the up-projection's weight


class _OutputMuls(TorchDispatchMode):
    """Counts multiplications whose result is shaped like `shape` (a full-size pass over the layer's output)."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.count = torch.Size(shape), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in ("mul", "mul_") and isinstance(out, torch.Tensor) and out.shape == self.shape:
            self.count += 1
        return out


def _conv_lora(alpha: float, dropout: float = 0.0):
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 5, 3, padding=1, bias=False))
    net.add_module("head", nn.Flatten())
    wrapped = add_lora(net, "^(?:conv)$", r=2, alpha=alpha, dropout=dropout, train_modules=[], seed=0)
    layer = wrapped.base_model.model.conv
    with torch.no_grad():  # B starts at zero: give it values so the update shows
        layer.lora_B["default"].weight.copy_(torch.randn_like(layer.lora_B["default"].weight))
    return wrapped, layer


@pytest.mark.parametrize("alpha", [4.0, 6.0])
def test_scaled_conv_forward_and_backward_match_peft(alpha):
    """Our forward against peft's own on the same layer: bit-identical for a power-of-two alpha / r (4 / 2),
    equal to rounding otherwise (6 / 2); the gradients too."""
    _, layer = _conv_lora(alpha)
    assert type(layer) is ScaledConv2d and layer.scaling == {"default": alpha / 2}
    x1 = torch.randn(2, 3, 6, 6, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    ours = layer(x1)
    theirs = LoraConv2d.forward(layer, x2)
    upstream = torch.randn_like(ours)
    grads = []
    for out, x in ((ours, x1), (theirs, x2)):
        layer.zero_grad()
        (out * upstream).sum().backward()
        grads.append((x.grad, layer.lora_A["default"].weight.grad.clone(), layer.lora_B["default"].weight.grad.clone()))
    exact = alpha == 4.0
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, theirs, **tol)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)
    # and both are W x + (alpha / r) B A x, worked out with plain convolutions
    a_w, b_w = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    by_hand = nn.functional.conv2d(x1, layer.base_layer.weight, padding=1) + alpha / 2 * nn.functional.conv2d(
        nn.functional.conv2d(x1, a_w, padding=1), b_w)
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)


def test_scaled_update_makes_no_pass_over_the_output_for_the_scale():
    wrapped, layer = _conv_lora(6.0, dropout=0.1)
    wrapped.train()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with _OutputMuls((2, 5, 6, 6)) as ours:
        layer(x).sum().backward()
    with _OutputMuls((2, 5, 6, 6)) as theirs:
        LoraConv2d.forward(layer, x).sum().backward()
    assert (ours.count, theirs.count) == (0, 2)  # peft: the scale forward, and again on the gradient


def test_scaled_linear_matches_peft_and_falls_back_for_other_cases():
    wrapped = _mlp_lora()
    layer = wrapped.base_model.model.fc1
    assert type(layer) is ScaledLinear and type(wrapped.base_model.model.head) is not ScaledLinear
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(layer(x), LoraLinear.forward(layer, x))  # alpha / r = 2: exact
        with wrapped.disable_adapter():  # peft's own path: the base layer alone
            assert torch.equal(layer(x), layer.base_layer(x))
        layer.merge()
        assert layer.merged
        torch.testing.assert_close(layer(x), LoraLinear.forward(layer, x), rtol=0, atol=0)
        layer.unmerge()

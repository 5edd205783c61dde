"""The original's recipe options: MixUp and where weight decay applies (parameter groups), checked by hand."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from prunelora.config import ModelConfig, TrainConfig, UnlearnConfig, load_config
from prunelora.engine.loop import (
    Recipe,
    TrainingLoop,
    batches,
    fit,
    make_optimizer,
    mixup,
    mixup_cross_entropy,
    param_groups,
    recipe_from,
)
from prunelora.errors import UserError
from prunelora.models import create_model

# ---------------------------------------------------------------- MixUp


def test_mixup_inputs_and_loss_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    perm = torch.tensor([1, 0])
    torch.testing.assert_close(mixup(x, 0.75, perm), torch.tensor([[0.75, 0.5], [0.25, 1.5]]))
    # logits [ln 3, 0] and [0, 0], labels [0, 1], partners' labels [1, 0], lambda 0.75:
    # CE(y)      = mean(-ln 3/4, -ln 1/2) = (0.287682 + 0.693147) / 2 = 0.490415
    # CE(y_perm) = mean(-ln 1/4, -ln 1/2) = (1.386294 + 0.693147) / 2 = 1.039721
    # loss = 0.75 * 0.490415 + 0.25 * 1.039721 = 0.627741
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    loss = mixup_cross_entropy(logits, torch.tensor([0, 1]), perm, 0.75)
    assert loss.item() == pytest.approx(0.627741, abs=1e-6)
    # lambda 1 is plain cross-entropy
    assert mixup_cross_entropy(logits, torch.tensor([0, 1]), perm, 1.0).item() == pytest.approx(0.490415, abs=1e-6)


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _recipe(**changes) -> Recipe:
    return Recipe(**{"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0, **changes})


def test_mixup_zero_is_plain_cross_entropy_training(tiny_data, cpu_ctx):
    """mixup=0 trains exactly as before MixUp existed: bit-identical to a hand-written cross-entropy loop."""
    data, splits = tiny_data
    index = splits.retain[:300]
    model, reference = _linear(), _linear()
    fit(model, data, index, _recipe(mixup=0.0), cpu_ctx)
    generator = torch.Generator().manual_seed(cpu_ctx.seed)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2, fused=True)  # the engine's on the CPU
    for _ in range(2):
        for idx in batches(len(index), 128, generator):
            rows = index[idx]
            assert data.augment == "none"  # digits: nothing drawn for augmentation
            loss = nn.functional.cross_entropy(reference(data.normalise(data.x_train[rows])), data.y_train[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    mixed = _linear()
    fit(mixed, data, index, _recipe(mixup=0.2), cpu_ctx)
    assert not torch.equal(mixed[1].weight, model[1].weight)  # MixUp on changes the training


def test_mixup_step_mixes_inputs_and_labels(tiny_data, cpu_ctx, monkeypatch):
    """One step through the loop, with MixUp's draws fixed: the recorded loss is lam CE(y) + (1 - lam) CE(y_perm)
    of the starting model on the mixed inputs."""
    data, splits = tiny_data
    index = splits.retain[:16]
    perm = torch.arange(16).flip(0)
    monkeypatch.setattr(TrainingLoop, "mix_draw", lambda self, n: (0.7, perm))
    model = _linear()
    start = copy.deepcopy(model)
    recipe = Recipe(epochs=1, batch_size=16, optimizer="sgd", lr=1e-3, weight_decay=0.0, mixup=0.2)
    history = fit(model, data, index, recipe, cpu_ctx)
    rows = index[batches(16, 16, torch.Generator().manual_seed(cpu_ctx.seed))[0]]
    x, y = data.normalise(data.x_train[rows]), data.y_train[rows]
    with torch.no_grad():
        logits = start(0.7 * x + 0.3 * x[perm])
        expected = 0.7 * nn.functional.cross_entropy(logits, y) + 0.3 * nn.functional.cross_entropy(logits, y[perm])
        plain = nn.functional.cross_entropy(start(x), y)
    assert history[0]["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert abs(history[0]["loss"] - plain.item()) > 1e-3


def test_mixup_lambda_is_beta_and_seeded(tiny_data, cpu_ctx):
    data, _ = tiny_data
    draws = []
    for _ in range(2):
        loop = TrainingLoop(_linear(), data, _recipe(mixup=0.2), cpu_ctx, None, None, None)
        draws.append([loop.mix_draw(8)[0] for _ in range(4000)])
    assert draws[0] == draws[1]  # the same seed, the same lambdas
    # partners as torchvision's MixUp pairs them: the batch rolled by one, x[i] with x[i - 1]
    torch.testing.assert_close(loop.mix_draw(4)[1], torch.tensor([3, 0, 1, 2]))
    lam = np.array(draws[0])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/5.6 = 0.178571; mostly near 0 or 1
    assert lam.mean() == pytest.approx(0.5, abs=0.02)
    assert lam.var() == pytest.approx(1 / 5.6, abs=0.01)
    assert ((lam < 0.1) | (lam > 0.9)).mean() > 0.5


def test_mixup_refuses_a_custom_objective(tiny_data, cpu_ctx):
    data, splits = tiny_data
    with pytest.raises(ValueError, match="mixup=0.2"):
        fit(_linear(), data, splits.retain[:32], _recipe(mixup=0.2), cpu_ctx, objective=lambda logits, b: logits.sum())


# ---------------------------------------------------------------- where weight decay applies


def _vit():
    return create_model(ModelConfig(name="vit-tiny", width=16, depth=2, heads=2), num_classes=5, in_chans=3, image_size=8)


def test_decay_weights_leaves_biases_norms_and_tokens_undecayed():
    model = _vit()
    named = list(model.named_parameters())
    groups = param_groups(named, _recipe(weight_decay=0.1, decay="weights"))
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    name_of = {id(p): n for n, p in named}
    decayed = {name_of[id(p)] for p in groups[0]["params"]}
    undecayed = {name_of[id(p)] for p in groups[1]["params"]}
    assert decayed | undecayed == set(name_of.values()) and not decayed & undecayed
    assert {"pos_embed", "cls_token", "norm.weight", "norm.bias", "head.bias", "patch_embed.proj.bias",
            "blocks.0.norm1.weight", "blocks.1.attn.qkv.bias"} <= undecayed
    assert {"patch_embed.proj.weight", "head.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight"} <= decayed
    assert all(n.endswith(".weight") and p.ndim >= 2 for n, p in named if n in decayed)
    # every block has qkv, proj, fc1, fc2 weights: 4 per block, plus the patch kernel and the head
    assert len(decayed) == 4 * 2 + 2


def test_decay_all_decays_every_parameter():
    model = _vit()
    named = list(model.named_parameters())
    groups = param_groups(named, _recipe(weight_decay=0.1))
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    assert [id(p) for p in groups[0]["params"]] == [id(p) for _, p in named]


def test_adamw_applies_decay_per_group():
    """One AdamW step with zero gradients moves only decayed parameters, by lr * wd * value."""
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    named = list(model.named_parameters())
    before = {n: p.detach().clone() for n, p in named}
    opt = make_optimizer(named, Recipe(1, 8, "adamw", 0.5, 0.1, decay="weights"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # decoupled decay: p <- p (1 - lr wd) = 0.95 p on the Linear's weight; bias and LayerNorm untouched
    torch.testing.assert_close(model[0].weight.detach(), 0.95 * before["0.weight"])
    for name in ("0.bias", "1.weight", "1.bias"):
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), before[name], rtol=0, atol=0)


def test_cpu_optimizers_are_fused_and_step_as_the_loop_does():
    """On the CPU each optimizer runs PyTorch's fused kernel: SGD (Nesterov, weight decay), Adam and AdamW land within
    float rounding of the per-tensor loop's weights, and the hand-computed first Adam step holds:
    p - lr x sign(g) (m / sqrt(v) = g / |g| after bias correction, eps aside)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    grads = [torch.randn_like(p) for p in model.parameters()]
    for name in ("sgd", "adam", "adamw"):
        recipe = Recipe(1, 8, name, 0.1, 5e-4)
        weights = {}
        for fused in (True, False):
            net = copy.deepcopy(model)
            opt = make_optimizer(list(net.named_parameters()), recipe)
            if not fused:  # the loop over tensors, as PyTorch runs it without `fused`
                sgd = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
                opt = type(opt)(net.parameters(), lr=0.1, weight_decay=5e-4, foreach=False, **sgd)
            assert opt.defaults["fused"] is (True if fused else None)
            for _ in range(3):
                for p, g in zip(net.parameters(), grads):
                    p.grad = g.clone()
                opt.step()
            weights[fused] = torch.cat([p.detach().flatten() for p in net.parameters()])
        torch.testing.assert_close(weights[True], weights[False], rtol=0, atol=1e-6)
    net = copy.deepcopy(model)
    opt = make_optimizer(list(net.named_parameters()), Recipe(1, 8, "adam", 0.1, 0.0))
    for p, g in zip(net.parameters(), grads):
        p.grad = g.clone()
    opt.step()
    for p, q, g in zip(net.parameters(), model.parameters(), grads):
        torch.testing.assert_close(p.detach(), q.detach() - 0.1 * g.sign(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- config


def test_recipe_from_carries_mixup_and_decay():
    recipe = recipe_from(TrainConfig(epochs=1, optimizer="adamw", lr=1e-3, weight_decay=0.1, mixup=0.2, decay="weights"))
    assert (recipe.mixup, recipe.decay) == (0.2, "weights")
    recipe = recipe_from(UnlearnConfig())  # unlearning has neither: MixUp off, decay on all parameters
    assert (recipe.mixup, recipe.decay) == (0.0, "all")


@pytest.mark.parametrize("override, message", [
    ("train.mixup=-0.1", "train.mixup is -0.1; it must be a finite number >= 0"),
    ("train.mixup=.inf", "train.mixup is inf"),
    ("train.mixup=.nan", "train.mixup is nan"),
    ("train.decay=bias", "train.decay is 'bias'; it must be one of all, weights"),
    ("data.augment=mirror", "data.augment is 'mirror'; it must be none, crop, flip or crop_flip"),
])
def test_recipe_options_are_checked(override, message):
    with pytest.raises(UserError, match=message):
        load_config(overrides=[override])


def test_paper_vit_config_has_the_authors_recipe():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "paper" / "cifar10_vit.yaml"
    cfg = load_config(path)
    t = cfg.train
    assert (t.optimizer, t.lr, t.weight_decay, t.decay, t.mixup, t.schedule, t.epochs) == (
        "adamw", 1e-3, 0.1, "weights", 0.2, "onecycle", 90)
    assert cfg.data.augment == "flip" and cfg.lora.targets == "authors_code" and cfg.pruning.targets == "paper"

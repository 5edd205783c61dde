"""Every unlearning method on the tiny configuration, PruneLoRA's report, and the BatchNorm handling."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import tiny_vit_config
from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.engine.loop import Recipe, batches, fit, recalibrate_bn
from prunelora.methods import METHODS, UnlearnTask, trainable_parameters
from prunelora.models import HEAD
from prunelora.models.pruning import count_zero_rows, prune_l2_structured
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.unlearn import unlearn_one


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=f"{key} changed")


@pytest.mark.parametrize("name", METHODS.names())
def test_method_smoke(name, task, trained_original, cpu_ctx):
    original = trained_original
    before = _state(original)
    grads = {n: p.requires_grad for n, p in original.named_parameters()}
    model, record = unlearn_one(name, original, task, cpu_ctx)

    assert model is not original
    assert not model.training
    x = task.data.normalise(task.data.x_test[:5])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, task.data.num_classes) and torch.isfinite(out).all()
    assert record["time_s"] > 0 and record["peak_memory_mb"] > 0
    assert record["epochs"] == (0 if name == "ssd" else 1)  # SSD does not train
    # the original is untouched: same weights and buffers, no adapters attached, same trainable flags
    _assert_same_state(_state(original), before)
    assert {n: p.requires_grad for n, p in original.named_parameters()} == grads
    assert not any("lora" in n for n, _ in original.named_modules())
    # the result is a plain model with the original's parameter names and shapes
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in before.items()}


def test_methods_are_registered_with_summaries():
    assert {"retrain", "finetune", "prune_finetune", "lora", "prunelora"} <= set(METHODS.names())
    for name in METHODS.names():
        spec = METHODS.get(name)
        assert spec.name == name and spec.summary and callable(spec.fn)


def test_prunelora_reports_pruning(task, trained_original, cpu_ctx):
    model, record = unlearn_one("prunelora", trained_original, task, cpu_ctx)
    # the same layers pruned the same way on a copy of the original give the reference rows
    reference = copy.deepcopy(trained_original)
    pruned = prune_l2_structured(reference, task.layers(reference, "prune"), task.config.pruning.amount)
    convs = [n for n, m in trained_original.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(pruned) == convs
    total = sum(m.out_channels // 2 for m in trained_original.modules() if isinstance(m, nn.Conv2d))
    assert record["pruned_layers"] == len(convs)
    assert record["pruned_rows"] == total == sum(len(r) for r in pruned.values())
    still, _ = count_zero_rows(model, pruned)
    assert record["pruned_rows_still_zero"] == still
    # the stem and the shortcut convs are pruned but neither adapted nor trained, so their pruned rows stay zero
    frozen = [n for n in convs if n == "conv1" or n.endswith("shortcut.0")]
    modules = dict(model.named_modules())
    for name in frozen:
        assert pruned[name] == [i for i in range(modules[name].out_channels) if not modules[name].weight[i].any()], name
    assert sum(len(pruned[n]) for n in frozen) <= still <= total
    assert record["lora_layers"] == len(convs) - len(frozen) == 16  # ResNet-18: 8 blocks x 2 convs (the authors')
    assert 0 < record["trainable_params"] < trainable_parameters(trained_original)
    assert "forget_head_rows_pruned" not in record  # the ResNet's head is not pruned
    assert len(record["history"]) == 1


def test_prunelora_is_deterministic(task, trained_original, cpu_ctx):
    a, _ = unlearn_one("prunelora", trained_original, task, cpu_ctx)
    b, _ = unlearn_one("prunelora", trained_original, task, cpu_ctx)
    _assert_same_state(_state(a), _state(b))


def test_finetune_and_lora_info(task, trained_original, cpu_ctx):
    _, ft = unlearn_one("finetune", trained_original, task, cpu_ctx)
    assert ft["trainable_params"] == sum(p.numel() for p in trained_original.parameters())
    assert "pruned_rows" not in ft
    _, lora = unlearn_one("lora", trained_original, task, cpu_ctx)
    assert "pruned_rows" not in lora and 0 < lora["trainable_params"] < ft["trainable_params"]


def test_prunelora_on_vit_prunes_the_head(vit_original, cpu_ctx):
    data, splits, original = vit_original
    cfg = tiny_vit_config()
    task = UnlearnTask(data, splits, cfg)
    model, record = unlearn_one("prunelora", original, task, cpu_ctx)
    # the last block's attention projection (16 rows -> 8) and the head (10 rows -> 5)
    assert record["pruned_layers"] == 2 and record["pruned_rows"] == 8 + 5 and record["lora_layers"] == 1
    reference = copy.deepcopy(original)
    pruned = prune_l2_structured(reference, task.layers(reference, "prune"), cfg.pruning.amount)
    assert record["forget_head_rows_pruned"] == sorted(set(pruned[HEAD]) & {3})
    with torch.no_grad():
        assert model(data.normalise(data.x_test[:2])).shape == (2, 10)


def test_prunelora_authors_code_trains_only_a_head_adapter(vit_original, cpu_ctx, monkeypatch):
    """lora.targets=authors_code (what the authors' ViT code trained): LoRA on the pruned head alone, the head's
    weight and bias frozen; merged, only the head weight differs from the pruned model."""
    from prunelora.methods import prunelora as prunelora_module

    data, splits, original = vit_original
    cfg = tiny_vit_config("lora.targets=authors_code")
    task = UnlearnTask(data, splits, cfg)
    seen = {}
    real_fit = prunelora_module.fit

    def spy(model, *args, **kwargs):  # what trained, and what got a gradient in the last step
        history = real_fit(model, *args, **kwargs)
        seen["trainable"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        seen["grads"] = {n: p.grad.abs().sum().item() for n, p in model.named_parameters() if p.grad is not None}
        return history

    monkeypatch.setattr(prunelora_module, "fit", spy)
    model, record = unlearn_one("prunelora", original, task, cpu_ctx)
    adapter = ["base_model.model.head.lora_A.default.weight", "base_model.model.head.lora_B.default.weight"]
    assert seen["trainable"] == adapter and sorted(seen["grads"]) == adapter
    assert all(g > 0 for g in seen["grads"].values())
    # r = 16: A is 16 x 16 (width 16), B is 10 x 16 (10 classes)
    assert record["lora_layers"] == 1 and record["trainable_params"] == 16 * 16 + 10 * 16
    assert record["pruned_layers"] == 2 and record["pruned_rows"] == 8 + 5
    reference = copy.deepcopy(original)
    prune_l2_structured(reference, task.layers(reference, "prune"), cfg.pruning.amount)
    after, pruned = _state(model), _state(reference)
    assert not torch.equal(after["head.weight"], pruned["head.weight"])  # the merged adapter
    torch.testing.assert_close(after["head.bias"], original.head.bias.detach(), rtol=0, atol=0)
    _assert_same_state({k: v for k, v in after.items() if k != "head.weight"},
                       {k: v for k, v in pruned.items() if k != "head.weight"})


# ---------------------------------------------------------------- batches and BatchNorm


def test_batches():
    assert [len(b) for b in batches(10, 4, None)] == [4, 4, 2]
    assert [len(b) for b in batches(9, 4, None)] == [4, 5]  # a trailing batch of 1 joins the previous one
    assert torch.cat(batches(9, 4, None)).tolist() == list(range(9))  # no sample is dropped
    assert [len(b) for b in batches(1, 4, None)] == [1]  # unless it is the only one
    assert torch.cat(batches(10, 4, None)).tolist() == list(range(10))
    shuffled = torch.cat(batches(10, 4, torch.Generator().manual_seed(0)))
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))
    again = torch.cat(batches(10, 4, torch.Generator().manual_seed(0)))
    assert torch.equal(shuffled, again)


def _recalibrate_and_capture(model: nn.Module, data, index, ctx):
    bn = model.bn1
    with torch.no_grad():  # corrupt the running statistics first
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(100.0)
                m.running_var.fill_(1e4)
    seen = []
    hook = bn.register_forward_hook(lambda mod, inputs, output: seen.append(inputs[0].detach().clone()))
    model.eval()
    recalibrate_bn(model, data, index, ctx)
    hook.remove()
    return bn, torch.cat(seen)


def test_recalibrate_bn_single_batch(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    index = splits.retain[torch.randperm(len(splits.retain), generator=torch.Generator().manual_seed(0))[:200]]
    bn, inputs = _recalibrate_and_capture(trained_original, data, index, cpu_ctx)
    assert len(inputs) == 200  # exactly the requested samples, once
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, inputs.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1  # restored after the pass
    assert not trained_original.training  # the mode is restored


def test_recalibrate_bn_several_batches_is_sample_mean(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    index = splits.retain[:300]  # batches of 256 and 44
    bn, inputs = _recalibrate_and_capture(trained_original, data, index, cpu_ctx)
    assert len(inputs) == 300
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_recalibrate_bn_without_batchnorm_is_a_no_op(tiny_data, cpu_ctx):
    data, splits = tiny_data
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = _state(model)
    recalibrate_bn(model, data, splits.retain[:10], cpu_ctx)
    _assert_same_state(_state(model), before)


def test_fit_with_frozen_bn_keeps_running_statistics(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    model = trained_original
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.weight.requires_grad_(True)
    before = _state(model)
    recipe = Recipe(epochs=1, batch_size=128, optimizer="adam", lr=1e-2, weight_decay=0.0, bn="frozen")
    history = fit(model, data, splits.retain[:256], recipe, cpu_ctx)
    after = _state(model)
    assert len(history) == 1 and {"epoch", "loss", "acc"} <= set(history[0])
    for key in before:
        if key == "head.weight":
            assert not torch.equal(before[key], after[key])
        else:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=f"{key} changed")
    assert not model.training


def test_fit_with_refit_bn_uses_statistics_recomputed_before_training(tiny_data, trained_original, cpu_ctx):
    """bn=refit: statistics recomputed over the training samples first, then kept fixed while training."""
    data, splits = tiny_data
    index = splits.retain[:256]
    model = trained_original
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.weight.requires_grad_(True)
    reference = copy.deepcopy(model)
    recalibrate_bn(reference, data, index, cpu_ctx)
    model.bn1.running_mean.fill_(5.0)  # stale statistics must not survive
    recipe = Recipe(epochs=1, batch_size=128, optimizer="adam", lr=1e-2, weight_decay=0.0, bn="refit")
    fit(model, data, index, recipe, cpu_ctx)
    for name, buf in reference.named_buffers():
        if "running" in name:
            torch.testing.assert_close(dict(model.named_buffers())[name], buf, rtol=0, atol=0, msg=name)
    assert not torch.equal(model.head.weight, reference.head.weight)


def test_autocast_is_off_on_the_cpu_and_channels_last_on_by_default():
    from prunelora.workflows.experiment import make_context

    cfg = load_config(overrides=["device=cpu"])
    assert cfg.channels_last is True and make_context(cfg, progress=False).channels_last  # the default, CPU too
    old = load_config(overrides=["device=cpu", "channels_last=null"])  # as configs saved before 2026-12-08 say
    assert not make_context(old, progress=False).channels_last
    ctx = Context(torch.device("cpu"), amp=True, channels_last=None, compile=False)
    assert not ctx.amp and not ctx.channels_last  # None: CUDA only
    model = nn.Conv2d(1, 2, 3)
    assert ctx.prepare_model(model) is model
    x = torch.randn(2, 1, 4, 4)
    assert ctx.prepare_input(x) is x
    with ctx.autocast():
        assert torch.get_autocast_dtype("cpu") is not None and not torch.is_autocast_enabled("cpu")
    asked = Context(torch.device("cpu"), channels_last=True)
    assert asked.channels_last and not asked.amp
    assert asked.prepare_input(x).is_contiguous(memory_format=torch.channels_last)
    assert asked.prepare_model(nn.Conv2d(1, 2, 3)).weight.is_contiguous(memory_format=torch.channels_last)


def test_image_data_moves_whole(tiny_data):
    data, _ = tiny_data
    moved = data.to(torch.device("cpu"))
    assert moved.x_train.dtype == torch.uint8 and torch.equal(moved.x_train, data.x_train)
    assert moved.classes == data.classes and moved.augment == data.augment


@pytest.mark.parametrize("rule, expected", [("prune", [3]), ("keep", [])])
def test_forget_head_row_ablation_on_vit(vit_original, cpu_ctx, rule, expected):
    data, splits, original = vit_original
    cfg = tiny_vit_config(f"pruning.forget_head_rows={rule}")
    _, record = unlearn_one("prunelora", original, UnlearnTask(data, splits, cfg), cpu_ctx)
    assert record["forget_head_rows_pruned"] == expected and record["pruned_rows"] == 8 + 5


def test_forget_head_row_rule_needs_a_pruned_head(task, trained_original, cpu_ctx):
    from prunelora.errors import UserError

    cfg = resolve_config(load_config(overrides=["pruning.forget_head_rows=keep"]))
    task = UnlearnTask(task.data, task.splits, cfg)
    with pytest.raises(UserError, match="needs the head among the pruned layers"):
        unlearn_one("prunelora", trained_original, task, cpu_ctx)


def test_a_schedule_too_short_for_one_cycle_runs_at_constant_rate(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    recipe = Recipe(epochs=1, batch_size=128, optimizer="sgd", lr=0.01, weight_decay=0.0, schedule="onecycle")
    history = fit(trained_original, data, splits.retain[:400], recipe, cpu_ctx)  # 3 steps: too few to warm up
    assert len(history) == 1

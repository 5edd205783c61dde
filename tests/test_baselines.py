"""The baselines' shared pieces as pure functions (against hand-computed values) and each method's
defining behaviour on the tiny configuration."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_OVERRIDES as TINY
from conftest import VIT_OVERRIDES
from prunelora.config import load_config
from prunelora.engine.loop import Cycle
from prunelora.errors import UserError
from prunelora.methods import UnlearnTask, method_task
from prunelora.methods.boundary_shrink import nearest_other_class
from prunelora.methods.importance import dampen, grad_statistics, saliency_mask
from prunelora.methods.losses import kl_to_teacher, l1_norm, linear_decay, random_wrong_labels
from prunelora.methods.random_labels import RandomRelabel, relabel_forget
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.unlearn import unlearn_one


def _task_with(task, *overrides):
    cfg = resolve_config(load_config(overrides=[*TINY, *overrides]))
    return dataclasses.replace(task, config=cfg)




@torch.no_grad()
def _forget_loss(model, task) -> float:
    data, forget = task.data, task.splits.forget
    return F.cross_entropy(model(data.normalise(data.x_train[forget])), data.y_train[forget]).item()


# ---------------------------------------------------------------- pure functions


def test_kl_to_teacher_hand_computed():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_to_teacher(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # at T = 2 the teacher softens to softmax(log(3)/2, 0) = (sqrt3, 1) / (sqrt3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert kl_to_teacher(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    # batch mean, and zero for identical distributions
    both = kl_to_teacher(torch.cat([student, teacher]), torch.cat([teacher, teacher]))
    assert both.item() == pytest.approx(expected / 2, rel=1e-6)


def test_random_wrong_labels_are_wrong_and_cover_every_other_class():
    y = torch.arange(10).repeat(500)
    out = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert not (out == y).any()
    counts = torch.bincount(out[y == 3], minlength=10)
    assert counts[3] == 0 and (counts[torch.arange(10) != 3] > 30).all()  # ~55 each of the other nine
    again = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_l1_norm_and_linear_decay():
    params = [nn.Parameter(torch.tensor([1.0, -2.0])), nn.Parameter(torch.tensor([[-0.5]]))]
    assert l1_norm(params).item() == 3.5
    assert [linear_decay(1e-3, e, 4) for e in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_saliency_mask_selects_exactly_the_largest_share():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.0], [2.0, 6.0]])}
    masks = saliency_mask(scores, 3 / 7)
    assert masks["a"].tolist() == [True, False, False]
    assert masks["b"].tolist() == [[True, False], [False, True]]
    for share in (0.0, 0.1, 0.5, 0.9, 1.0):
        total = sum(int(m.sum()) for m in saliency_mask(scores, share).values())
        assert total == round(share * 7)
    ties = saliency_mask({"w": torch.ones(10)}, 0.5)
    assert int(ties["w"].sum()) == 5  # exactly the share, even when every score ties


def test_dampen_only_where_forget_importance_dominates():
    w = torch.tensor([1.0, 1.0, 1.0, -2.0])
    importance = {"w": torch.tensor([1.0, 1.0, 1.0, 0.0])}
    forget_importance = {"w": torch.tensor([5.0, 20.0, 100.0, 0.0])}
    changed = dampen({"w": w}, importance, forget_importance, alpha=10.0, lam=1.0)
    # 5 < 10 x 1: untouched; 20 and 100 > 10: scaled by 1/20 and 1/100; zero importance everywhere: untouched
    assert w.tolist() == pytest.approx([1.0, 0.05, 0.01, -2.0])
    assert changed == 2
    w = torch.tensor([1.0, 1.0])
    dampen({"w": w}, {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([20.0, 20.0])}, alpha=10.0, lam=40.0)
    assert w.tolist() == [1.0, 1.0]  # the factor is capped at 1: dampening never amplifies


def test_grad_statistics_match_autograd(tiny_data, trained_original, cpu_ctx):
    data, splits = tiny_data
    model, index = trained_original, splits.forget[:40]
    for p in model.parameters():
        p.requires_grad_(True)
    x, y = data.normalise(data.x_train[index]), data.y_train[index]
    halves = [torch.arange(20), torch.arange(20, 40)]
    grads = []
    for h in halves:
        model.zero_grad()
        F.cross_entropy(model(x[h]), y[h]).backward()
        grads.append(model.head.weight.grad.clone())
    stats1 = grad_statistics(model.eval(), data, index, cpu_ctx, batch_size=20, power=1)
    stats2 = grad_statistics(model, data, index, cpu_ctx, batch_size=20, power=2)
    torch.testing.assert_close(stats1["head.weight"], (grads[0] + grads[1]).abs() / 2)
    torch.testing.assert_close(stats2["head.weight"], (grads[0] ** 2 + grads[1] ** 2) / 2)


def test_cycle_visits_every_sample_before_repeating():
    cycle = Cycle(torch.arange(10, 20), 4, torch.Generator().manual_seed(0))
    first = torch.cat([cycle.next() for _ in range(3)])  # batches of 4, 4, 2
    assert sorted(first.tolist()) == list(range(10, 20))
    assert len(cycle.next()) == 4  # then a new shuffled pass


# ---------------------------------------------------------------- each method's defining behaviour


def test_grad_ascent_raises_the_forget_loss(task, trained_original, cpu_ctx):
    before = _forget_loss(trained_original, task)
    model, _ = unlearn_one("grad_ascent", trained_original, _task_with(task, "hparams.grad_ascent.lr=1e-3"), cpu_ctx)
    assert _forget_loss(model, task) > before + 0.05


def test_neggrad_plus_raises_the_forget_loss_more_than_finetune(task, trained_original, cpu_ctx):
    ft, _ = unlearn_one("finetune", trained_original, task, cpu_ctx)
    ng, _ = unlearn_one("neggrad_plus", trained_original, _task_with(task, "hparams.neggrad_plus.beta=0.5"), cpu_ctx)
    assert _forget_loss(ng, task) > _forget_loss(ft, task)


def test_random_labels_relabel_only_forget_samples(task):
    labels = relabel_forget(task, seed=0)
    forget, retain = task.splits.forget, task.splits.retain
    assert not (labels[forget] == task.data.y_train[forget]).any()
    assert torch.equal(labels[retain], task.data.y_train[retain])
    assert torch.equal(labels, relabel_forget(task, seed=0))


def test_random_relabel_draws_anew_for_every_batch():
    """The same forget samples in two batches get independent wrong labels (the reference's torch.randint per
    batch): two draws agree on about 1/9 of 900 samples of 10 classes, never on all; retain rows keep theirs."""
    forget = torch.zeros(1000, dtype=torch.bool)
    forget[:900] = True
    y = torch.arange(1000) % 10
    relabel = RandomRelabel(forget, 10, seed=0)
    rows = torch.arange(1000)
    first, second = relabel(y, rows), relabel(y, rows)
    assert (first[:900] != y[:900]).all() and (second[:900] != y[:900]).all()
    assert torch.equal(first[900:], y[900:]) and torch.equal(second[900:], y[900:])
    agree = (first[:900] == second[:900]).float().mean().item()
    assert 0.06 < agree < 0.17  # 1/9 = 0.111 if independent; 1.0 if drawn once


@pytest.mark.parametrize("method", ["random_labels", "salun"])
def test_random_labels_and_salun_redraw_per_batch_by_default(method, task, trained_original, cpu_ctx, monkeypatch):
    """Over two epochs every forget sample is seen twice, with two independent draws: about 1/9 of them agree
    (digits has 10 classes); with redraw=once the labels come from one draw and the objective never relabels."""
    seen = {}
    call = RandomRelabel.__call__

    def spy(self, y, rows):
        out = call(self, y, rows)
        for r, label in zip(rows[self.forget[rows]].tolist(), out[self.forget[rows]].tolist()):
            seen.setdefault(r, []).append(label)
        return out

    monkeypatch.setattr(RandomRelabel, "__call__", spy)
    unlearn_one(method, trained_original, _task_with(task, f"hparams.{method}.epochs=2"), cpu_ctx)
    assert sorted(seen) == task.splits.forget.tolist() and all(len(v) == 2 for v in seen.values())
    agree = sum(a == b for a, b in seen.values()) / len(seen)
    assert agree < 0.3
    seen.clear()
    unlearn_one(method, trained_original, _task_with(task, f"hparams.{method}.redraw=once"), cpu_ctx)
    assert seen == {}


def test_scrub_honours_bn_and_one_schedule_over_every_pass(task, trained_original, cpu_ctx, monkeypatch):
    """unlearn.bn=frozen leaves every BatchNorm statistic as the original's; unlearn.schedule=onecycle is one
    schedule stepped once per batch of every max and min pass (OneCycleLR refuses a step past its total)."""
    model, _ = unlearn_one("scrub", trained_original, _task_with(task, "unlearn.bn=frozen"), cpu_ctx)
    stats = [k for k in model.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(model.state_dict()[k], trained_original.state_dict()[k]) for k in stats)
    from prunelora.methods import scrub as scrub_module

    made = []
    real = scrub_module.make_schedule
    monkeypatch.setattr(scrub_module, "make_schedule", lambda *a: made.append(real(*a)) or made[-1])
    onecycle = _task_with(task, "unlearn.schedule=onecycle", "hparams.scrub.epochs=3")
    unlearn_one("scrub", trained_original, onecycle, cpu_ctx)
    (schedule,) = made
    forget_steps, retain_steps = -(-len(task.splits.forget) // 128), -(-len(task.splits.retain) // 128)
    assert schedule.total_steps == 2 * forget_steps + 3 * retain_steps  # max passes in the first 2 epochs
    assert schedule.last_epoch == schedule.total_steps


def test_salun_changes_only_the_salient_share(task, trained_original, cpu_ctx):
    before = {n: p.detach().clone() for n, p in trained_original.named_parameters()}
    model, record = unlearn_one("salun", trained_original, _task_with(task, "hparams.salun.share=0.3"), cpu_ctx)
    total = sum(p.numel() for p in before.values())
    assert record["trainable_params"] == round(0.3 * total)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters())
    assert 0 < changed <= record["trainable_params"]  # Adam with a zero gradient leaves a weight exactly as it was


def test_scrub_teacher_is_frozen_and_unchanged(task, trained_original, cpu_ctx, monkeypatch):
    teachers = []
    original_like = UnlearnTask.original_like

    def capture(self, model):
        frozen = original_like(self, model)
        teachers.append((frozen, {k: v.clone() for k, v in frozen.state_dict().items()}))
        return frozen

    monkeypatch.setattr(UnlearnTask, "original_like", capture)
    model, _ = unlearn_one("scrub", trained_original, task, cpu_ctx)
    (teacher, before), = teachers
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics included
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), teacher.parameters()))


def test_ssd_touches_nothing_when_no_weight_is_selected(task, trained_original, cpu_ctx):
    model, record = unlearn_one("ssd", trained_original, _task_with(task, "hparams.ssd.alpha=1e30"), cpu_ctx)
    assert record["dampened_weights"] == 0
    for a, b in zip(model.state_dict().values(), trained_original.state_dict().values()):
        assert torch.equal(a, b)
    _, record = unlearn_one("ssd", trained_original, task, cpu_ctx)
    assert 0 < record["dampened_share"] < 0.5


def test_bad_teacher_pulls_forget_outputs_toward_the_random_teacher(task, trained_original, cpu_ctx, monkeypatch):
    from prunelora.methods import bad_teacher as bt

    teachers = []
    make = bt.random_teacher
    monkeypatch.setattr(bt, "random_teacher", lambda *a: teachers.append(make(*a)) or teachers[-1])
    quick = _task_with(task, "hparams.bad_teacher.lr=1e-2")
    model, _ = unlearn_one("bad_teacher", trained_original, quick, cpu_ctx)
    x = task.data.normalise(task.data.x_train[task.splits.forget])
    with torch.no_grad():
        target = teachers[0](x)
        assert kl_to_teacher(model(x), target) < kl_to_teacher(trained_original(x), target)


def test_nearest_other_class(task, trained_original, cpu_ctx):
    data, forget = task.data, task.splits.forget
    frozen = task.original_like(trained_original)
    with torch.no_grad():
        clean = frozen(data.normalise(data.x_train[forget])).argmax(1)
    assert torch.equal(nearest_other_class(frozen, data, forget, cpu_ctx, bound=1e-6), clean)
    moved = nearest_other_class(frozen, data, forget, cpu_ctx, bound=0.5)
    assert (moved != data.y_train[forget]).float().mean() > 0.5


# ---------------------------------------------------------------- hyper-parameters and variants


def test_hparams_are_filled_and_checked():
    cfg = resolve_config(load_config(overrides=["methods=[grad_ascent,salun]", "hparams.salun.share=0.2"]))
    assert cfg.hparams["salun"]["share"] == 0.2 and cfg.hparams["grad_ascent"]["lr"] == 1e-2
    assert "scrub" not in cfg.hparams  # only the methods that run
    with pytest.raises(UserError, match="hparams.salun.shar.*Did you mean 'hparams.salun.share'"):
        resolve_config(load_config(overrides=["hparams.salun.shar=0.2"]))
    with pytest.raises(UserError, match="hparams.salu: unknown method 'salu'. Did you mean 'salun'"):
        resolve_config(load_config(overrides=["hparams.salu.share=0.2"]))
    with pytest.raises(UserError, match=r"hparams.salun.share is 1.5; it must be in \(0, 1\]"):
        resolve_config(load_config(overrides=["hparams.salun.share=1.5"]))
    with pytest.raises(UserError, match="hparams.grad_ascent.lr is -1.0; it must be a positive finite number"):
        resolve_config(load_config(overrides=["hparams.grad_ascent.lr=-1"]))
    with pytest.raises(UserError, match="hparams.retrain.lr"):
        resolve_config(load_config(overrides=["hparams.retrain.lr=0.1"]))  # retrain uses train.*


def test_method_recipe_overrides_the_unlearn_section(task):
    _, ga = method_task(task, "grad_ascent")
    recipe = ga.unlearn_recipe()
    assert (recipe.optimizer, recipe.lr, recipe.bn, recipe.epochs) == ("sgd", 1e-2, "frozen", task.config.unlearn.epochs)


def test_variants(task, trained_original, cpu_ctx):
    cfg = resolve_config(load_config(overrides=[*TINY, "methods=[prunelora,pl_r2]",
                                                "variants.pl_r2.method=prunelora", "variants.pl_r2.lora.r=2"]))
    vtask = dataclasses.replace(task, config=cfg)
    spec, inner = method_task(vtask, "pl_r2")
    assert spec.name == "prunelora" and inner.config.lora.r == 2 and vtask.config.lora.r == 8
    _, base = unlearn_one("prunelora", trained_original, vtask, cpu_ctx)
    _, small = unlearn_one("pl_r2", trained_original, vtask, cpu_ctx)
    assert small["trainable_params"] < base["trainable_params"]
    assert cfg.variants["pl_r2"] == {"method": "prunelora", "lora": {"r": 2}}
    everything = resolve_config(load_config(overrides=["methods=all", "variants.v.method=lora"]))
    assert everything.methods[-1] == "v" and "salun" in everything.methods


@pytest.mark.parametrize("overrides, message", [
    (["variants.v.lora.r=2"], "variants.v needs a base method"),
    (["variants.v.method=prunelor"], "variants.v.method: unknown method 'prunelor'. Did you mean 'prunelora'"),
    (["variants.v.method=prunelora", "variants.v.model.width=8"], "variants.v.model cannot be set"),
    (["variants.lora.method=prunelora"], "variant name 'lora' is a registered method"),
    (["variants.v.method=prunelora", "variants.v.lora.rr=2"], "Did you mean 'lora.r'"),
    (["methods=[prunelora,v]"], "unknown method 'v'"),
])
def test_variant_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        resolve_config(load_config(overrides=overrides))


def test_every_method_runs_on_a_vit(tiny_overrides):
    from prunelora.workflows.run import run

    overrides = [o for o in tiny_overrides if not o.startswith("model.")]
    cfg = load_config(overrides=[*overrides, *VIT_OVERRIDES, "methods=all", "eval.evidence=[]", "eval.curves=false"])
    results = run(cfg, progress=False, log=lambda *a: None)
    assert not [r for r in results["runs"] if "error" in r]
    assert {r["method"] for r in results["runs"]} == {"original", *resolve_config(cfg).methods}

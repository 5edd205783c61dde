"""The relearning attack on text runs (`metrics/text_relearn.py`): which questions it trains on and scores, the
level's step count, that it leaves the model alone and repeats itself, and a text run's evidence settings. Nothing
here depends on how well a tiny model memorises (no ROUGE-L threshold)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.errors import UserError
from prunelora.metrics.catalog import keys
from prunelora.metrics.evidence import EvidenceInput, relearn_metric, relearn_rows
from prunelora.metrics.text_eval import OUTPUT_COLUMNS
from prunelora.metrics.text_relearn import check_steps, steps_to_level
from prunelora.workflows.experiment import prepare, resolve_config, train_original

# 12 authors x 2 questions, 3 forgotten (6 forget rows), a Llama of width 32: the attack trains on 2 of the forget
# rows (and 8 retained) for 4 steps and scores the other 4
OVERRIDES = ["data.name=authors", "data.authors=12", "data.questions=2", "model.width=32", "train.epochs=1",
             "threads=1", "forget.classes=[0,1,2]", "eval.relearn_samples=2", "eval.relearn_steps=4"]


@pytest.fixture(scope="module")
def setup():
    cfg = resolve_config(load_config(overrides=OVERRIDES))
    data, splits = prepare(cfg)
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    model, _ = train_original(cfg, data, ctx)
    return cfg, data, splits, ctx, model


def inputs_of(cfg, data, splits, ctx, **eval_settings) -> EvidenceInput:
    return EvidenceInput(data, splits, ctx, dataclasses.replace(cfg.eval, **eval_settings), cfg, "original")


def test_the_trained_forget_questions_are_never_scored():
    forget, retain = torch.arange(100, 120), torch.arange(0, 100)
    for seed in range(5):
        trained, held = relearn_rows(forget, retain, 8, seed)
        few, some = trained[:8], trained[8:]
        assert set(few.tolist()) <= set(forget.tolist()) and set(some.tolist()) <= set(retain.tolist())
        assert len(some) == 4 * 8 and len(set(trained.tolist())) == len(trained)
        assert not set(few.tolist()) & set(held.tolist())
        assert sorted(few.tolist() + held.tolist()) == forget.tolist()  # every other forget question is scored
    again = relearn_rows(forget, retain, 8, 3)
    assert all(torch.equal(a, b) for a, b in zip(again, relearn_rows(forget, retain, 8, 3)))


def test_the_draw_is_the_image_versions():
    # evidence.relearn draws its forget and retain samples the same way from the same generator
    forget, retain = torch.arange(50, 70), torch.arange(0, 50)
    generator = torch.Generator().manual_seed(7)
    few = forget[torch.randperm(len(forget), generator=generator)[:5]]
    some = retain[torch.randperm(len(retain), generator=generator)[:20]]
    assert torch.equal(relearn_rows(forget, retain, 5, 7)[0], torch.cat([few, some]))


def test_steps_to_level_is_the_first_step_at_the_level():
    assert steps_to_level({0: 0.95, 1: 0.5}, 0.9) == 0  # already there before any step
    assert steps_to_level({0: 0.3, 1: 0.5, 2: 0.9, 4: 0.95}, 0.9) == 2
    assert steps_to_level({4: 0.95, 0: 0.3, 2: 0.1}, 0.9) == 4  # in step order, whatever the dict's
    assert steps_to_level({0: 0.3, 1: 0.89, 16: 0.5}, 0.9) is None  # never within the budget
    assert steps_to_level({0: 1.0}, 1.0) == 0


def test_checks_double_up_to_the_budget():
    assert check_steps(16) == [0, 1, 2, 4, 8, 16]
    assert check_steps(10) == [0, 1, 2, 4, 8, 10]
    assert check_steps(1) == [0, 1]


def test_relearning_leaves_the_model_alone_and_repeats(setup):
    cfg, data, splits, ctx, model = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable, training = [p.requires_grad for p in model.parameters()], model.training
    inputs = inputs_of(cfg, data, splits, ctx)
    first = relearn_metric(model, None, inputs)
    assert set(first) == {k for k in keys("text") if k.startswith("relearn")} and 0 <= first["relearn_rougeL"] <= 1
    assert first["relearn_steps"] is None or first["relearn_steps"] in check_steps(4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training == training and [p.requires_grad for p in model.parameters()] == trainable
    assert relearn_metric(model, None, inputs) == first  # the same seed, the same figures


def test_the_models_own_rouge_is_step_0(setup):
    cfg, data, splits, ctx, model = setup
    outputs = np.full((len(data.y_train), len(OUTPUT_COLUMNS)), np.nan)
    outputs[:, OUTPUT_COLUMNS.index("rougeL")] = 1.0  # every question answered word for word before any step
    metrics = relearn_metric(model, (outputs, None), inputs_of(cfg, data, splits, ctx, relearn_level=0.9))
    assert metrics["relearn_steps"] == 0


def test_no_held_out_question_is_nan(setup):
    cfg, data, splits, ctx, model = setup
    metrics = relearn_metric(model, None, inputs_of(cfg, data, splits, ctx, relearn_samples=len(splits.forget)))
    assert np.isnan(metrics["relearn_rougeL"]) and metrics["relearn_steps"] is None


def test_a_text_run_defaults_to_relearning_and_keeps_what_is_set():
    cfg = resolve_config(load_config(overrides=["data.name=authors"]))
    assert cfg.eval.evidence == ["relearn"] and (cfg.eval.relearn_steps, cfg.eval.relearn_lr) == (16, 1e-4)
    cfg = resolve_config(load_config(overrides=["data.name=authors", "eval.relearn_steps=3", "eval.relearn_lr=0.01",
                                                "eval.evidence=[]"]))
    assert cfg.eval.evidence == [] and (cfg.eval.relearn_steps, cfg.eval.relearn_lr) == (3, 0.01)
    image = resolve_config(load_config())  # the image defaults are untouched
    assert image.eval.evidence == ["probe", "relearn", "divergence"]
    assert (image.eval.relearn_steps, image.eval.relearn_lr) == (10, 1e-3)


@pytest.mark.parametrize("evidence", ["probe", "divergence", "attack", "klom"])
def test_image_only_evidence_is_refused_on_text(evidence):
    with pytest.raises(UserError, match=f"eval.evidence={evidence} scores images only; a text run takes relearn"):
        resolve_config(load_config(overrides=["data.name=authors", f"eval.evidence=[relearn,{evidence}]"]))


@pytest.mark.parametrize("level", [0, -0.5, 1.5, float("nan")])
def test_the_level_is_a_share(level):
    with pytest.raises(UserError, match="eval.relearn_level"):
        load_config(overrides=[f"eval.relearn_level={level}"])

"""The text modality end to end on a tiny Llama: the tokenizer, the loss on answer tokens, the paper's methods on a
Llama's Linear rows, the run's table, and the requests and settings a text run refuses. Each assertion holds on any
CPU (nothing here depends on how well a tiny model memorises)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json

import pytest
import torch

from prunelora.cli import main
from prunelora.config import load_config
from prunelora.engine.context import Context
from prunelora.engine.loop import (
    AnswerLogits,
    Batch,
    answer_loss,
    sequence_nll,
    warmup_cosine,
)
from prunelora.methods import METHODS, UnlearnTask
from prunelora.methods.variants import method_task
from prunelora.metrics.catalog import declared
from prunelora.workflows.experiment import prepare, resolve_config, train_original
from prunelora.workflows.unlearn import unlearn_one
from test_registries import produced_keys_without_a_column

PAPER = ("q_proj", "k_proj", "v_proj", "o_proj")  # what the paper preset prunes and adapts on a Llama
# 12 authors x 2 questions, a Llama of width 32, one epoch: the whole text pipeline in seconds (relearning: 2 of
# the 4 forget questions trained on for 2 steps, the other 2 scored)
TEXT_OVERRIDES = ["data.name=authors", "data.authors=12", "data.questions=2", "model.width=32", "train.epochs=1",
                  "unlearn.epochs=1", "threads=1", "forget.classes=[0,1]", "eval.relearn_samples=2",
                  "eval.relearn_steps=2"]


@pytest.fixture(scope="module")
def text_cfg():
    return resolve_config(load_config(overrides=TEXT_OVERRIDES))


@pytest.fixture(scope="module")
def text_data(text_cfg):
    return prepare(text_cfg)


@pytest.fixture(scope="module")
def text_original(text_cfg, text_data):
    data, _ = text_data
    model, _ = train_original(text_cfg, data, Context(torch.device("cpu"), seed=0, progress=False))
    return model


def test_a_text_data_set_resolves_to_the_text_defaults():
    cfg = resolve_config(load_config(overrides=["data.name=authors"]))
    assert cfg.model.name == "llama-tiny" and cfg.eval.evidence == ["relearn"]
    assert cfg.forget.fraction == 0.05 and cfg.forget.classes is None  # TOFU's forget05
    assert (cfg.train.batch_size, cfg.train.schedule, cfg.train.clip, cfg.train.optimizer) == (32, "warmup_cosine", 1.0,
                                                                                               "adamw")
    image = resolve_config(load_config())
    assert (image.train.batch_size, image.train.schedule, image.train.clip) == (128, "onecycle", 0.0)


def test_the_tokenizer_round_trips_every_text(text_data):
    data, _ = text_data
    tok = data.tokenizer
    texts = [q.question for q in data.source.qa] + [q.answer for q in data.source.holdout_qa]
    texts += [q.paraphrase for q in data.source.facts] + ["Zoë's naïve café, 1961 — ¿qué?"]
    for text in texts:
        assert tok.decode(tok.encode(text).ids) == text


def test_rows_hold_the_prompt_then_the_answer_and_eos(text_data):
    data, _ = text_data
    prompts, answers = data.prompts_answers(torch.arange(3))
    for prompt, answer, qa in zip(prompts, answers, data.qa(torch.arange(3))):
        assert data.tokenizer.decode(prompt) == f"Question: {qa.question}\nAnswer:"
        assert answer[-1] == data.eos_id and data.tokenizer.decode(answer[:-1]) == f" {qa.answer}"
    ids, labels = data.batch(torch.arange(4))
    assert ids.shape == labels.shape and (ids != data.pad_id).sum(1).max() == ids.shape[1]  # cut to the longest


def test_the_loss_reads_answer_tokens_only(text_data, text_original):
    data, _ = text_data
    ids, labels = data.batch(torch.arange(3))
    full = text_original(input_ids=ids).logits  # (B, L, V)
    keep = labels[:, 1:] != -100
    logits = AnswerLogits(text_original)(ids, keep)
    torch.testing.assert_close(logits, full[:, :-1][keep], rtol=1e-5, atol=1e-5)  # the head at answer positions
    # by hand: the logits at position t - 1 predict token t, for every answer token t (EOS included) of each row
    nll = {r: [-torch.log_softmax(full[r, t - 1], -1)[labels[r, t]] for t in range(1, ids.shape[1])
               if labels[r, t] != -100] for r in range(3)}
    every = torch.stack([v for r in range(3) for v in nll[r]])
    loss = answer_loss(logits, Batch(ids, labels, torch.arange(3), 0))
    assert loss.item() == pytest.approx(every.mean().item(), rel=1e-5)
    rows = sequence_nll(logits, labels)
    assert rows.tolist() == pytest.approx([torch.stack(nll[r]).mean().item() for r in range(3)], rel=1e-5)
    assert len(every) == sum(len(a) for a in data.prompts_answers(torch.arange(3))[1])  # answer tokens only


def test_warmup_cosine_peaks_after_five_percent_and_ends_at_a_tenth():
    factors = [warmup_cosine(s, 100) for s in range(100)]
    assert factors[4] == 1.0 and factors[0] == pytest.approx(0.2) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))


def test_pruning_zeroes_half_the_rows_of_each_attention_projection(text_cfg, text_data, text_original):
    data, splits = text_data
    task = UnlearnTask(data, splits, text_cfg)
    model = __import__("copy").deepcopy(text_original)
    pruned = task.prune(model)
    modules = dict(model.named_modules())
    assert sorted(pruned) == sorted(n for n in modules if n.endswith(PAPER))
    for name, rows in pruned.items():
        weight = modules[name].weight
        assert len(rows) == round(0.5 * weight.shape[0])
        assert torch.all(weight[rows] == 0) and torch.all(weight.norm(dim=1)[[i for i in range(weight.shape[0])
                                                                                 if i not in rows]] > 0)


def test_lora_trains_only_the_adapters(text_cfg, text_data, text_original):
    data, splits = text_data
    task = UnlearnTask(data, splits, text_cfg)
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    model, record = unlearn_one("lora", text_original, task, ctx)
    r = text_cfg.lora.r
    adapted = [m for n, m in text_original.named_modules() if n.endswith(PAPER)]
    assert record["trainable_params"] == sum(r * (m.in_features + m.out_features) for m in adapted)
    before = dict(text_original.named_parameters())
    for name, p in model.named_parameters():  # merged: only the adapted projections moved
        moved = not torch.equal(p, before[name])
        assert moved == name.removesuffix(".weight").endswith(PAPER), name


def test_retrain_never_sees_a_forgotten_author(text_cfg, text_data, text_original, monkeypatch):
    import prunelora.methods.retrain as retrain_module

    data, splits = text_data
    seen = []
    real_fit = retrain_module.fit
    monkeypatch.setattr(retrain_module, "fit", lambda model, d, index, *a, **k: seen.append(index) or real_fit(
        model, d, index, *a, **k))
    task = UnlearnTask(data, splits, dataclasses.replace(text_cfg, cache=False))
    unlearn_one("retrain", text_original, task, Context(torch.device("cpu"), seed=0, progress=False))
    (rows,) = seen
    assert not set(data.y_train[rows].tolist()) & set(splits.forget_classes)
    assert len(rows) == len(data.y_train) - 2 * text_cfg.data.questions  # every other row: authors and facts


@pytest.mark.parametrize("method", ["finetune", "prune_finetune", "prunelora"])
def test_every_paper_method_runs_on_text(method, text_cfg, text_data, text_original):
    data, splits = text_data
    spec, task = method_task(UnlearnTask(data, splits, text_cfg), method)
    model, record = unlearn_one(method, text_original, task, Context(torch.device("cpu"), seed=0, progress=False))
    assert type(model) is type(text_original) and record["epochs"] == 1
    assert "text" in spec.modalities
    if method != "finetune":  # the paper preset: q, k, v, o of each of 2 layers; q, o 32 rows, k, v 2 heads x 8
        assert record["pruned_layers"] == 8 and record["pruned_rows"] == 2 * (16 + 8 + 8 + 16)


def test_forget_aware_pruning_on_a_llama_prunes_as_many_other_rows(text_cfg, text_data, text_original):
    """pruning.importance=forget scores each projection row on the forgotten authors' real tokens against the
    retained authors': the same counts as the L2 rule, other rows, and the method still runs."""
    data, splits = text_data
    cfg = dataclasses.replace(text_cfg, pruning=dataclasses.replace(text_cfg.pruning, importance="forget"))
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    aware = UnlearnTask(data, splits, cfg).prune(copy.deepcopy(text_original), ctx)
    plain = UnlearnTask(data, splits, text_cfg).prune(copy.deepcopy(text_original), ctx)
    assert {k: len(v) for k, v in aware.items()} == {k: len(v) for k, v in plain.items()} and aware != plain
    _, task = method_task(UnlearnTask(data, splits, cfg), "prunelora")
    _, record = unlearn_one("prunelora", text_original, task, ctx)
    assert record["pruned_rows"] == 2 * (16 + 8 + 8 + 16)


@pytest.mark.parametrize("method, loss", [("prunelora", "npo"), ("prunelora", "graddiff"), ("lora", "npo")])
def test_the_adapters_train_against_the_forget_set_too(method, loss, text_cfg, text_data, text_original):
    """hparams.<method>.forget_loss: the forget rows' NLL rises against the paper's rule at the same seed (the
    forget term pushes them away), and NPO's reference is the original's summed answer NLL."""
    from prunelora.methods.forget_terms import reference_nll

    data, splits = text_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    # 10 steps (the tiny set is one batch an epoch): the forget term raises the forgotten answers' summed NLL by
    # about 8-11% over the plain rule on this machine, a direction that does not hang on the CPU's rounding
    steps = {"lr": 1e-2, "epochs": 10}
    hparams = {**text_cfg.hparams, method: {**text_cfg.hparams[method], "forget_loss": loss, **steps}}
    plain = {**text_cfg.hparams, method: {**text_cfg.hparams[method], **steps}}
    models = []
    for hp in (hparams, plain):
        _, task = method_task(UnlearnTask(data, splits, dataclasses.replace(text_cfg, hparams=hp)), method)
        models.append(unlearn_one(method, text_original, task, ctx)[0])
    rows = splits.forget
    ids, labels = data.batch(rows)
    nll = [sequence_nll(AnswerLogits(m)(ids, labels[:, 1:] != -100), labels, "sum").mean() for m in models]
    assert nll[0] > nll[1]
    reference = reference_nll(text_original, UnlearnTask(data, splits, text_cfg), ctx)
    expected = sequence_nll(AnswerLogits(text_original)(ids, labels[:, 1:] != -100), labels, "sum")
    assert torch.allclose(reference[rows], expected, atol=1e-4) and reference.isnan().sum() == len(reference) - len(rows)


@pytest.mark.parametrize("targets, layers", [("paper", "self_attn"), ("mlp", "mlp"), ("all", None)])
def test_channel_removal_shrinks_the_llama_and_answers_as_the_mask_does(targets, layers, text_cfg, text_data,
                                                                         text_original):
    """pruning.mode=remove: half of each selected layer's MLP channels (gate/up rows, down columns) or key-value
    groups (k/v rows with their query heads' q rows and o columns) leave the model; the masked model (the same
    channels zeroed, the same groups' v rows and o columns zeroed) gives the same logits within 1e-5."""
    from prunelora.models.pruning import remove_llama_channels

    data, splits = text_data
    cfg = dataclasses.replace(text_cfg, pruning=dataclasses.replace(text_cfg.pruning, mode="remove", targets=targets),
                              lora=dataclasses.replace(text_cfg.lora, targets=targets))
    task = UnlearnTask(data, splits, cfg)
    removed, masked = copy.deepcopy(text_original), copy.deepcopy(text_original)
    names = task.layers(removed, "prune")
    assert task.prune(removed) == {}
    info = task.removed
    remove_llama_channels(masked, names, cfg.pruning.amount, mask=True)
    ids, _ = data.batch(splits.forget)
    with torch.no_grad():
        assert torch.allclose(removed(input_ids=ids).logits, masked(input_ids=ids).logits, atol=1e-5)
    # width 32, 4 heads of 8 (2 kv groups), MLP 344: a layer loses 1 kv group (2 query heads x 8 x 32 x 2 for q
    # and o, 8 x 32 x 2 for k and v) and 172 MLP channels (3 x 172 x 32)
    per_layer = {"self_attn": 2 * 2 * 8 * 32 + 2 * 8 * 32, "mlp": 3 * 172 * 32}
    shed = sum(per_layer[k] for k in per_layer if layers in (None, k)) * 2
    assert info["params_before"] - info["params_after"] == shed
    _, task = method_task(UnlearnTask(data, splits, cfg), "prunelora")  # the method runs on the smaller model
    model, record = unlearn_one("prunelora", text_original, task, Context(torch.device("cpu"), seed=0, progress=False))
    assert sum(p.numel() for p in model.parameters()) == record["params_after"] == info["params_after"]


def test_run_prints_every_paper_method_and_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "-q", *TEXT_OVERRIDES]) == 0
    printed = capsys.readouterr().out
    for method in ("original", "retrain", "finetune", "prune_finetune", "lora", "prunelora"):
        assert f"| {method} |" in printed.replace("\\_", "_")
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["modality"] == "text" and results["data"]["forget_classes"] == [0, 1]
    metrics = {r["method"]: r["metrics"] for r in results["runs"]}
    for m in metrics.values():
        assert 0 <= m["forget_rougeL"] <= 1 and 0 < m["retain_prob"] <= 1
        assert 0 <= m["relearn_rougeL"] <= 1 and m["relearn_steps"] in (None, 0, 1, 2)  # the default evidence
    assert metrics["retrain"]["avg_gap"] == 0 and metrics["prunelora"]["time_vs_retrain"] > 0
    # against itself: KS p-value 1, privleak 0; every model's utility is a harmonic mean of shares
    assert metrics["retrain"]["forget_quality"] == 1.0 and metrics["retrain"]["privleak"] == 0.0
    for m in metrics.values():
        assert 0 <= m["forget_quality"] <= 1 and 0 <= m["model_utility"] <= 1 and 0 <= m["forget_ES"] <= 1
        assert 0 <= m["forget_truth_ratio"] <= 1 and -100 <= m["privleak"] + 1e-6
    # every key a text run records is declared, and every declared metric has its column in the table
    assert produced_keys_without_a_column(results, "text") == set()
    headers = "".join(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| Method |"))
    assert all(f" {metric.header} |" in headers for metric in declared("text"))
    assert "Forget ROUGE-L" in (out / "results.md").read_text() and (out / "tokenizer.json").is_file()
    assert (out / "tofu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # forget quality against model utility
    assert main(["run", "--out", str(out), *TEXT_OVERRIDES]) == 0  # resumed: every method read back
    resumed = capsys.readouterr()
    assert resumed.err.count("done before") == 5 and "| prunelora |" in resumed.out


@pytest.mark.parametrize("override, message", [
    ("forget.classes=[Nobody Atall]", "is not an author of this data set"),
    ("forget.classes=[99]", "author 99 is out of range"),
    ("methods=[scrub]", "method scrub has no text version yet"),
    ("model.name=resnet18", "is an image model"),
    ("eval.evidence=[probe]", "eval.evidence=probe scores images only; a text run takes relearn"),
    ("forget.sequence=[[0],[1]]", "forget.sequence is for images"),
    ("eval.curves=true", "on text set eval.curves=false"),
    ("eval.select=best", "on text use eval.select=last"),
    ("forget.indices=rows.txt", "forget.indices is for images"),
    ("data.questions=21", "data.questions"),
])
def test_bad_text_settings_are_one_line_before_training(override, message, tmp_path, capsys):
    base = [o for o in TEXT_OVERRIDES if not (o.startswith("forget.") and override.startswith("forget."))]
    assert main(["run", "--out", str(tmp_path / "x"), *base, override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_a_misspelt_author_gets_the_close_name(text_cfg, capsys, tmp_path):
    from prunelora.data.catalog import class_names

    name = class_names(text_cfg.data)[3]
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    assert main(["run", "--out", str(tmp_path / "y"), *TEXT_OVERRIDES[:-1], f"forget.classes=[{typo}]"]) == 2
    assert f"did you mean '{name}'" in capsys.readouterr().err


def test_only_the_paper_methods_have_text():
    text = sorted(m for m in METHODS.names() if "text" in METHODS.get(m).modalities)
    assert text == sorted(["retrain", "finetune", "prune_finetune", "lora", "prunelora"])
    cfg = resolve_config(load_config(overrides=["data.name=authors", "methods=all"]))
    assert sorted(cfg.methods) == text


def test_the_cache_entry_keeps_the_tokenizer(text_cfg, text_data, text_original, tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setenv("PRUNELORA_CACHE", str(tmp_path / "cache"))
    data, _ = text_data
    train_original(text_cfg, data, Context(torch.device("cpu"), seed=0, progress=False))
    (entry,) = (tmp_path / "cache").glob("original-*.safetensors")
    with safe_open(str(entry), framework="pt") as f:
        assert f.metadata()["tokenizer.json"] == data.tokenizer_json
    again, record = train_original(text_cfg, data, Context(torch.device("cpu"), seed=0, progress=False))
    assert record["cached"]
    assert again.lm_head.weight is again.model.embed_tokens.weight  # still tied after loading


def test_llama_tiny_has_the_design_sizes():
    from prunelora.models import create_model, select_layers

    cfg = resolve_config(load_config(overrides=["data.name=authors"]))
    model = create_model(cfg.model, 2048, 1, 64)
    assert sum(p.numel() for p in model.parameters()) == 625_280  # tied embeddings counted once
    assert model.config.num_key_value_heads == 2 and model.lm_head.weight is model.model.embed_tokens.weight
    sizes = {preset: len(select_layers(model, "llama", preset, "prune")) for preset in ("paper", "mlp", "attn", "all")}
    assert sizes == {"paper": 8, "mlp": 6, "attn": 8, "all": 14}


@pytest.mark.parametrize("command", ["train", "tune"])
def test_commands_that_take_images_only_refuse_text_in_one_line(command, tmp_path, capsys):
    argv = [command, "--out", str(tmp_path / "z"), *TEXT_OVERRIDES] + (["--method", "lora"] if command == "tune" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"prunelora {command} takes image data sets so far" in err


def test_the_tofu_picture_draws_a_point_per_method_and_seed(monkeypatch):
    from prunelora.report import plots

    drawn = []
    real = plots.plt.Axes.scatter
    monkeypatch.setattr(plots.plt.Axes, "scatter", lambda ax, x, y, **k: drawn.append((k["label"], x, y)) or
                        real(ax, x, y, **k))
    runs = [{"method": m, "seed": s, "metrics": {"forget_quality": fq, "model_utility": mu}}
            for m, s, fq, mu in [("retrain", 0, 1.0, 0.8), ("retrain", 1, 1.0, 0.82), ("prunelora", 0, 0.0, 0.6),
                                 ("prunelora", 1, 1e-4, 0.7)]]
    runs.append({"method": "lora", "seed": 0, "metrics": {}, "error": "diverged"})
    assert plots.tofu_png({"runs": runs}, [])[:4] == b"\x89PNG"
    assert drawn == [("retrain", (0.8, 0.82), (1.0, 1.0)), ("prunelora", (0.6, 0.7), (plots.FQ_FLOOR, 1e-4))]
    assert plots.tofu_png({"runs": [{"method": "x", "seed": 0, "metrics": {"UA": 1.0}}]}, []) is None  # images

"""The command line: the full run, the train -> unlearn -> evaluate round trip, and one-line user errors."""

from __future__ import annotations

import contextlib
import io
import json
import stat

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prunelora.api import evaluate_checkpoint, load_model
from prunelora.cli import main
from prunelora.config import PAPER_METHODS, load_config
from prunelora.engine.context import Context
from prunelora.methods import METHODS
from prunelora.metrics.evaluate import predict
from prunelora.models import create_model
from prunelora.store.files import umask
from prunelora.workflows.experiment import prepare

QUALITY = ("UA", "RA", "TA", "MIA", "MIA_entropy", "MIA_m_entropy", "MIA_loss_balanced", "MIA_loss_authors", "forget_TA")


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, tiny_overrides):
    """`prunelora run` on the tiny configuration, once for this module: (exit code, out dir, stdout)."""
    out = tmp_path_factory.mktemp("run") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", "--out", str(out), "-q", "save_models=true", *tiny_overrides])
    return code, out, stdout.getvalue()


def test_saved_models_reproduce_the_reported_metrics(run_output):
    """save_models=true writes each unlearned model; evaluating it gives the numbers in results.json."""
    _, out, _ = run_output
    results = json.loads((out / "results.json").read_text())
    for entry in results["runs"]:
        if entry["method"] == "original":
            continue
        path = out / "models" / f"{entry['method']}.safetensors"
        assert path.is_file() and path.with_suffix(".yaml").is_file()
        metrics = evaluate_checkpoint(path)
        for key in ("UA", "RA", "TA", "MIA"):
            assert metrics[key] == pytest.approx(entry["metrics"][key], abs=1e-9), (entry["method"], key)


def test_run_writes_results(run_output):
    code, out, _ = run_output
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "config.yaml", "models", "progress",
                                              "report.csv", "report.tex", "bars.png", "curves.png"}
    for png in ("bars.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o666 & ~umask()}  # readable by others under 022
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "environment", "data", "runs"}

    cfg = results["config"]
    assert cfg["methods"] == PAPER_METHODS and cfg["model"]["width"] == 4 and cfg["unlearn"]["epochs"] == 1
    assert cfg["train"]["epochs"] == 1 and cfg["lora"]["r"] == 8  # resolved: no None left for preset values

    env = results["environment"]
    assert env["device"] == "cpu" and env["threads"] == 1
    for package in ("prunelora", "torch", "peft", "timm", "torch-pruning", "scikit-learn", "safetensors"):
        assert env["versions"][package], package

    assert results["data"]["forget_classes"] == [3]
    sizes = results["data"]["sizes"]
    assert sizes["forget"] + sizes["retain"] == 1437 and sizes["test_forget"] + sizes["test_retain"] == 360

    runs = results["runs"]
    assert [r["method"] for r in runs] == ["original", *cfg["methods"]]
    retrain = next(r["metrics"] for r in runs if r["method"] == "retrain")
    for r in runs:
        m = r["metrics"]
        assert r["seed"] == 0
        for key in QUALITY:
            assert 0.0 <= m[key] <= 100.0, (r["method"], key)
        assert m["time_s"] > 0 and m["peak_memory_mb"] > 0 and m["loop_s_per_epoch"] > 0 and m["one_off_s"] >= 0
        # the whole time is the loop's epochs plus the one-off work
        assert m["loop_s_per_epoch"] * r["info"]["epochs"] + m["one_off_s"] == pytest.approx(m["time_s"])
        expected_gap = sum(abs(m[k] - retrain[k]) for k in ("UA", "MIA", "RA", "TA")) / 4
        assert m["avg_gap"] == pytest.approx(expected_gap)
    assert retrain["avg_gap"] == 0.0 and retrain["time_vs_retrain"] == 1.0
    assert runs[0]["metrics"]["time_vs_retrain"] is None
    prunelora = next(r for r in runs if r["method"] == "prunelora")
    assert prunelora["info"]["pruned_rows"] > 0 and "history" in prunelora["info"]


def test_run_writes_report_and_config(run_output):
    _, out, stdout = run_output
    report = (out / "results.md").read_text()
    assert report.startswith("# prunelora: digits, resnet18-tiny, forget class(es) 3, seed 0")
    assert "| Method | UA | MIA | RA | TA |" in report
    for name in ["original", *PAPER_METHODS]:
        assert f"| {name} |" in report and f"| {name} |" in stdout
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == json.loads((out / "results.json").read_text())["config"]
    assert load_config(out / "config.yaml").model.width == 4


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("methods (settings: hparams.<method>.<key>")
    for name in METHODS.names():
        assert f"  {name} " in out
    assert "\n  salun " in out and "share=0.5" in out and "lr=0.01, optimizer=sgd, bn=frozen" in out
    for name in ("resnet18-tiny", "vit-paper", "digits", "cifar10"):
        assert f"  {name} " in out


def test_train_unlearn_evaluate_round_trip(tmp_path, capsys, tiny_overrides):
    original = tmp_path / "original"
    assert main(["train", "--out", str(original), "-q", *tiny_overrides]) == 0
    assert {p.name for p in original.iterdir()} == {"model.safetensors", "model.yaml", "metrics.json"}
    trained = json.loads((original / "metrics.json").read_text())
    saved_cfg = yaml.safe_load((original / "model.yaml").read_text())
    assert saved_cfg["model"]["width"] == 4 and saved_cfg["train"]["optimizer"] == "sgd"
    capsys.readouterr()

    unlearned = tmp_path / "unlearned"
    assert main(["unlearn", "--checkpoint", str(original / "model.safetensors"), "--method", "prunelora",
                 "--out", str(unlearned), "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"model.safetensors", "model.yaml", "metrics.json"} <= {p.name for p in unlearned.iterdir()}
    record = json.loads((unlearned / "metrics.json").read_text())
    assert record["method"] == "prunelora" and record["seed"] == 0
    assert record["metrics"] == printed
    assert record["info"]["pruned_rows"] > 0
    assert yaml.safe_load((unlearned / "model.yaml").read_text())["methods"] == ["prunelora"]

    metrics_file = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(unlearned / "model.safetensors"), "--out", str(metrics_file)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert json.loads(metrics_file.read_text()) == evaluated
    for key in QUALITY:  # the saved model reproduces the metrics measured right after unlearning
        assert evaluated[key] == pytest.approx(record["metrics"][key], abs=1e-9), key

    assert main(["evaluate", "--checkpoint", str(original / "model.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(trained["test_acc"])

    # another forget request on the same checkpoint, checked against predictions made here
    ckpt = original / "model.safetensors"
    assert main(["evaluate", "--checkpoint", str(ckpt), "forget.classes=[5]"]) == 0
    other = json.loads(capsys.readouterr().out)
    state, cfg = load_model(ckpt, ["forget.classes=[5]"])
    assert cfg.forget.classes == [5]
    data, _ = prepare(cfg)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    model.load_state_dict(state)
    ctx = Context(torch.device("cpu"), progress=False)
    right_train = predict(model, data, data.x_train, ctx).argmax(1) == data.y_train.numpy()
    right_test = predict(model, data, data.x_test, ctx).argmax(1) == data.y_test.numpy()
    is5_train, is5_test = data.y_train.numpy() == 5, data.y_test.numpy() == 5
    assert other["UA"] == pytest.approx(100 - 100 * right_train[is5_train].mean())
    assert other["RA"] == pytest.approx(100 * right_train[~is5_train].mean())
    assert other["TA"] == pytest.approx(100 * right_test[~is5_test].mean())
    assert other["forget_TA"] == pytest.approx(100 * right_test[is5_test].mean())
    assert other["test_acc"] == pytest.approx(100 * np.mean(right_test))


# ---------------------------------------------------------------- user errors


def _text_file(path, text):
    path.write_text(text)
    return path


def _foreign(path):
    save_file({"w": torch.zeros(2, 2)}, str(path))
    return path


def _mismatched(path, checkpoint):
    with safe_open(str(checkpoint), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(checkpoint))
    state["head.weight"] = torch.zeros(3, 3)
    from prunelora.store.checkpoints import tensors_digest  # an intact file of another shape, not a damaged one

    save_file(state, str(path), metadata={**meta, "digest": tensors_digest(state)})
    return path


# each case: (argv builder (tmp, checkpoint, out, tiny) -> argv, a fragment the error line must contain)
ERROR_CASES = {
    "unknown-method": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "methods=prunlora"],
                       "unknown method 'prunlora'. Did you mean 'prunelora'?"),
    "unknown-method-unlearn": (lambda t, c, o, tiny: ["unlearn", "--checkpoint", c, "--method", "finetun",
                                                      "--out", o, "-q"],
                               "unknown method 'finetun'. Did you mean 'finetune'?"),
    "unknown-model": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "model.name=resnet19"],
                      "unknown model 'resnet19'"),
    "unknown-data-set": (lambda t, c, o, tiny: ["train", "--out", o, "-q", *tiny, "data.name=minst"],
                         "unknown data set 'minst'. Did you mean 'mnist'"),
    "unknown-key": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "unlearn.epoch=5"],
                    "Did you mean 'unlearn.epochs'?"),
    "wrong-type": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "seed=one"], "'seed' expects int"),
    "class-out-of-range": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "forget.classes=[10]"],
                           "forget class 10 is out of range"),
    "all-classes": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "forget.classes=[0,1,2,3,4,5,6,7,8,9]"],
                    "nothing to retain"),
    "missing-data-dir": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "data.name=cifar10",
                                                "data.root=/nonexistent"], "data.root"),
    "missing-checkpoint": (lambda t, c, o, tiny: ["unlearn", "--checkpoint", str(t / "none.safetensors"),
                                                  "--method", "prunelora", "--out", o, "-q"], "does not exist"),
    "missing-checkpoint-evaluate": (lambda t, c, o, tiny: ["evaluate", "--checkpoint", str(t / "none.safetensors"),
                                                           "--out", o], "does not exist"),
    "unreadable-checkpoint": (lambda t, c, o, tiny: ["unlearn", "--checkpoint",
                                                     str(_text_file(t / "x.safetensors", "not a model\n")),
                                                     "--method", "prunelora", "--out", o, "-q"],
                              "is not a readable safetensors file"),
    "foreign-checkpoint": (lambda t, c, o, tiny: ["evaluate", "--checkpoint", str(_foreign(t / "f.safetensors")),
                                                  "--out", o], "was not written by prunelora"),
    "mismatched-checkpoint": (lambda t, c, o, tiny: ["unlearn", "--checkpoint",
                                                     str(_mismatched(t / "m.safetensors", c)),
                                                     "--method", "prunelora", "--out", o, "-q"],
                              "does not match the model it describes (wrong shape: head.weight)"),
    "checkpoint-fixes-model": (lambda t, c, o, tiny: ["evaluate", "--checkpoint", c, "--out", o, "model.width=8"],
                               "the checkpoint fixes the model settings"),
    "checkpoint-fixes-data": (lambda t, c, o, tiny: ["unlearn", "--checkpoint", c, "--method", "finetune",
                                                     "--out", o, "-q", "data.test_fraction=0.5"],
                              "the checkpoint fixes the data settings"),
    "missing-config": (lambda t, c, o, tiny: ["run", "--config", str(t / "none.yaml"), "--out", o, "-q"],
                       "config file"),
    "invalid-yaml": (lambda t, c, o, tiny: ["run", "--config", str(_text_file(t / "bad.yaml", "seed: [1,\n")),
                                            "--out", o, "-q"], "is not valid YAML"),
    "config-not-mapping": (lambda t, c, o, tiny: ["train", "--config", str(_text_file(t / "l.yaml", "- 1\n")),
                                                  "--out", o, "-q"], "must hold a mapping"),
    "override-without-equals": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "seed"],
                                "override 'seed' is not KEY=VALUE"),
    "missing-argument": (lambda t, c, o, tiny: ["unlearn", "--checkpoint", c, "--out", o],
                         "the following arguments are required: --method"),
    "no-command": (lambda t, c, o, tiny: [], "the following arguments are required: command"),
    "unknown-method-setting": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "hparams.salun.shar=0.3"],
                               "Did you mean 'hparams.salun.share'"),
    "variant-without-method": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "variants.v.lora.r=2"],
                               "variants.v needs a base method"),
    "unknown-evidence": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "eval.evidence=[prob]"],
                         "unknown evidence metric 'prob'"),
    "two-requests": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, "forget.classes=[3]", "forget.fraction=0.1"],
                     "forget.classes and forget.fraction are both set"),
    "missing-indices-file": (lambda t, c, o, tiny: ["run", "--out", o, "-q", *tiny, f"forget.indices={t}/none.txt"],
                             "does not exist"),
    "export-without-models": (lambda t, c, o, tiny: ["export", "--run", str(t), "--method", "prunelora", "--out", o],
                              "is not a prunelora run directory"),
    "report-without-results": (lambda t, c, o, tiny: ["report", str(t), "--out", o], "holds no results.json"),
    "unknown-command": (lambda t, c, o, tiny: ["trian", "--out", o], "invalid choice: 'trian'"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_are_one_line(case, tmp_path, capsys, checkpoint, tiny_overrides):
    build, fragment = ERROR_CASES[case]
    out = tmp_path / "out"
    argv = build(tmp_path, str(checkpoint), str(out), tiny_overrides)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("prunelora: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


def test_out_is_a_file(tmp_path, capsys, tiny_overrides):
    target = _text_file(tmp_path / "results", "keep me\n")
    assert main(["run", "--out", str(target), "-q", *tiny_overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunelora: error: --out") and "is a file" in err and len(err.splitlines()) == 1
    assert target.read_text() == "keep me\n"


def test_evaluate_out_is_a_directory(tmp_path, capsys, checkpoint):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tmp_path, capsys, tiny_overrides):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "-q", *tiny_overrides, "device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is available" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_several_seeds_in_one_run(tmp_path, tiny_overrides, capsys):
    """seeds=[0,1]: every method on every seed, each compared with its own seed's retrain; mean ± std tables."""
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "-q", "seeds=[0,1]", "methods=retrain,finetune", *tiny_overrides]) == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["method"]) for r in results["runs"]] == [
        (0, "original"), (0, "retrain"), (0, "finetune"), (1, "original"), (1, "retrain"), (1, "finetune")]
    for r in results["runs"]:
        if r["method"] == "retrain":
            assert r["metrics"]["avg_gap"] == 0.0
    ua = [r["metrics"]["UA"] for r in results["runs"] if r["method"] == "finetune"]
    mean = sum(ua) / 2
    std = abs(ua[0] - ua[1]) / 2**0.5  # sample std of two values
    assert f"| finetune | {mean:.2f} ± {std:.2f} |" in table
    assert "seeds 0, 1 (mean ± sample std over 2 runs)" in (out / "results.md").read_text()


def test_repeated_seed_is_an_error(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "o"), "seeds=[1,1]"]) == 2
    assert "seeds lists a seed twice" in capsys.readouterr().err


def test_a_diverging_method_is_reported_and_the_others_kept(tmp_path, capsys, tiny_overrides):
    out = tmp_path / "run"
    code = main(["run", "--out", str(out), "-q", *tiny_overrides, "methods=[finetune,grad_ascent]",
                 "hparams.grad_ascent.lr=1e8"])
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    by_method = {r["method"]: r for r in results["runs"]}
    assert "error" not in by_method["finetune"] and by_method["finetune"]["metrics"]["RA"] > 0
    assert "not finite" in by_method["grad_ascent"]["error"] or "nan" in by_method["grad_ascent"]["error"]
    report = (out / "results.md").read_text()
    assert "## Failed" in report and "- grad_ascent (seed 0):" in report
    assert "| grad_ascent |" not in report

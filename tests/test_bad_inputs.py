"""Bad and odd inputs to the command line, as a new user types them: each one gets one clear error line and exit
code 2 before anything is trained or written, and no output replaces an input. The messages themselves are unit
tested beside the code that checks them (test_config.py, test_files.py); this table checks the one line and that
nothing was written or changed."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from prunelora.cli import main
from prunelora.config import dump_yaml, load_config
from prunelora.store.checkpoints import FORMAT
from prunelora.workflows.experiment import resolve_config


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict:
    """{relative path: sha256} of every file below `folder` (to show nothing there changed)."""
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    """A run directory as `prunelora run` leaves it (its config and models/), for export's checks."""
    folder = tmp_path_factory.mktemp("inputs") / "run"
    cfg = resolve_config(load_config(overrides=[*tiny_overrides, "methods=[finetune]", "save_models=true"]))
    (folder / "models").mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_yaml(cfg))
    return folder


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory):
    """A folder this process cannot write in: read-only by its mode, or (as root, whom modes do not stop) a part
    of /sys; skipped where there is none."""
    folder = tmp_path_factory.mktemp("readonly")
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            yield candidate
            break
    else:
        pytest.skip("no folder here refuses this process's writes")
    folder.chmod(0o755)


def _json_file(path: Path, value) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(value))
    return path


def _bad_metadata(path: Path) -> str:
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "config": "{not json", "extra": "{}"})
    return str(path)


def _results_without_seed(path: Path):
    config = {"data": {}, "model": {}, "train": {}, "forget": {}}
    return _json_file(path, {"config": config, "runs": [{"method": "finetune", "metrics": {"UA": 1.0}}]})


# each case: (argv builder (t: tmp folder, c: checkpoint, o: an --out that must stay absent, tiny, run folder,
#              unwritable folder) -> argv, a fragment of the one error line)
CASES = {
    # values the config check refuses, up front
    "negative-seed": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "seed=-1"], "seed is -1"),
    "seed-past-64-bits": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "seed=18446744073709551616"],
                          "seed is 18446744073709551616"),
    "seed-overflowing-a-method-seed": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "seed=20000000000000"],
                                       "it must be an integer from 0 to 2147483647"),
    "negative-split-seed": (lambda t, c, o, tiny, r, u: ["train", "--out", o, *tiny, "data.split_seed=-1"],
                            "data.split_seed is -1"),
    "infinite-lr": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "unlearn.lr=.inf"], "unlearn.lr is inf"),
    "label-smoothing-5": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "train.label_smoothing=5"],
                          "train.label_smoothing is 5.0"),
    "label-smoothing-nan": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "train.label_smoothing=nan"],
                            "train.label_smoothing is nan"),
    "negative-lora-alpha": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "lora.alpha=-16"],
                            "lora.alpha is -16.0"),
    "nan-lora-alpha": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "lora.alpha=nan"], "lora.alpha is nan"),
    "all-and-more": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "methods=all,lora"],
                     "'all' already runs every method"),
    "timm-with-width": (lambda t, c, o, tiny, r, u: ["run", "--out", o, "model.name=timm:nosuchnet", "model.width=4"],
                        "remove model.width (a timm model is set by its name alone)"),
    "config-is-a-folder": (lambda t, c, o, tiny, r, u: ["run", "--config", str(t), "--out", o],
                           "is a directory; pass a YAML file"),
    "unlearn-negative-seed": (lambda t, c, o, tiny, r, u: ["unlearn", "--checkpoint", c, "--method", "lora",
                                                           "--out", o, "seed=-1"], "seed is -1"),
    # validation and tuning
    "select-unknown": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "eval.select=first"],
                       "eval.select is 'first'; it must be one of last, best"),
    "retrain-free-for-samples": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "forget.fraction=0.1",
                                                              "eval.objective=retrain_free"],
                                 "eval.objective=retrain_free scores forgetting on held-out samples"),
    "select-best-for-a-sequence": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "forget.sequence=[[1],[2]]",
                                                                "forget.classes=null", "eval.select=best"],
                                   "a forget.sequence needs eval.select=last"),
    "tune-unknown-method": (lambda t, c, o, tiny, r, u: ["tune", "--method", "prunlora", "--out", o, *tiny],
                            "Did you mean 'prunelora'"),
    "tune-nothing-to-tune": (lambda t, c, o, tiny, r, u: ["tune", "--method", "retrain", "--out", o, *tiny],
                             "method 'retrain' has nothing to tune"),
    "tune-zero-trials": (lambda t, c, o, tiny, r, u: ["tune", "--method", "ssd", "--trials", "0", "--out", o, *tiny],
                         "--trials is 0; it must be at least 1"),
    "tune-negative-seconds": (lambda t, c, o, tiny, r, u: ["tune", "--method", "ssd", "--seconds", "-5", "--out", o,
                                                           *tiny], "--seconds is -5.0"),
    "tune-trials-not-a-number": (lambda t, c, o, tiny, r, u: ["tune", "--method", "ssd", "--trials", "many", "--out",
                                                              o, *tiny], "invalid int value: 'many'"),
    "tune-bad-setting": (lambda t, c, o, tiny, r, u: ["tune", "--method", "ssd", "--out", o, *tiny,
                                                      "hparams.ssd.alpha=-1"], "hparams.ssd.alpha is -1.0"),
    "tune-out-unwritable": (lambda t, c, o, tiny, r, u: ["tune", "--method", "ssd", "--out", str(u / "tune"), *tiny],
                            "cannot be written"),
    # known once the data set is loaded, still before any training
    "split-without-train-samples": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "data.test_fraction=0.999"],
                                    "data.test_fraction is 0.999"),
    "targets-selecting-nothing": (lambda t, c, o, tiny, r, u: ["run", "--out", o, *tiny, "pruning.targets=layer9.*"],
                                  "selects no Conv2d/Linear layer"),
    # where a command writes
    "out-below-a-file": (lambda t, c, o, tiny, r, u: ["run", "--out", str(_file(t / "notes.txt") / "sub"), *tiny],
                         "notes.txt' is a file"),
    "out-name-too-long": (lambda t, c, o, tiny, r, u: ["train", "--out", str(t / ("x" * 300)), *tiny],
                          "this file system takes at most"),
    "out-unwritable": (lambda t, c, o, tiny, r, u: ["run", "--out", str(u / "run"), *tiny], "cannot be written"),
    "evaluate-out-unwritable": (lambda t, c, o, tiny, r, u: ["evaluate", "--checkpoint", c, "--out",
                                                             str(u / "m.json")], "cannot be written"),
    "evaluate-over-its-checkpoint": (lambda t, c, o, tiny, r, u: ["evaluate", "--checkpoint", c, "--out", c],
                                     "is the checkpoint being evaluated"),
    "evaluate-over-its-config": (lambda t, c, o, tiny, r, u: ["evaluate", "--checkpoint", c, "--out",
                                                              str(Path(c).with_suffix(".yaml"))],
                                 "is the checkpoint being evaluated (or its config)"),
    "unlearn-into-the-original": (lambda t, c, o, tiny, r, u: ["unlearn", "--checkpoint", c, "--method", "finetune",
                                                               "--out", str(Path(c).parent)],
                                  "holds --checkpoint"),
    "train-over-model-init": (lambda t, c, o, tiny, r, u: ["train", "--out", str(Path(c).parent), *tiny,
                                                           f"model.init={c}"], "holds model.init"),
    # export
    "export-outside-the-run": (lambda t, c, o, tiny, r, u: ["export", "--run", str(r), "--method",
                                                            "../../original/model", "--out", o + ".safetensors"],
                               "--method '../../original/model' did not run"),
    "export-ignored-seed": (lambda t, c, o, tiny, r, u: ["export", "--run", str(r), "--method", "finetune", "--seed",
                                                         "7", "--out", o + ".safetensors"],
                            "--seed 7 is not the seed of run"),
    "export-to-yaml": (lambda t, c, o, tiny, r, u: ["export", "--run", str(r), "--method", "finetune", "--out",
                                                    o + ".yaml"], "must name a .safetensors file"),
    "export-into-the-run": (lambda t, c, o, tiny, r, u: ["export", "--run", str(r), "--method", "finetune", "--out",
                                                         str(r / "models" / "finetune.safetensors")],
                            "lies in run"),
    # files read
    "report-of-empty-results": (lambda t, c, o, tiny, r, u: ["report", str(_json_file(t / "empty", {})), "--out", o],
                                "is not a prunelora results file"),
    "report-of-a-run-without-seed": (lambda t, c, o, tiny, r, u: ["report", str(_results_without_seed(t / "noseed")),
                                                                  "--out", o], "run 0 lacks its method, seed or metrics"),
    "checkpoint-metadata-not-json": (lambda t, c, o, tiny, r, u: ["evaluate", "--checkpoint",
                                                                  _bad_metadata(t / "bad.safetensors"), "--out", o],
                                     "holds a damaged config"),
    # verify: the request against the model's classes, the two models, the request file
    "verify-unknown-class": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"classes": ["zebra"]}),
                             "forget class 'zebra' is not a class of this data set"),
    "verify-class-out-of-range": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"classes": [12]}),
                                  "forget class 12 is out of range"),
    "verify-index-out-of-range": (lambda t, c, o, tiny, r, u: _verify(t, c, o, [5, 99999]),
                                  "index 99999 is out of range"),
    "verify-request-of-colours": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"colours": [1]}),
                                  "must name either classes or indices"),
    "verify-other-architecture": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"classes": [3]},
                                                                      after=_vit_checkpoint(t, c)),
                                  "is another architecture than --before"),
    "verify-before-is-after": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"classes": [3]}, after=c),
                               "--before and --after are the same file"),
    "verify-after-is-a-copy": (lambda t, c, o, tiny, r, u: _verify(t, c, o, {"classes": [3]},
                                                                   after=_copy(c, t / "copy.safetensors")),
                               "hold the same model (SHA-256"),
}


def _verify(t: Path, c: str, o: str, request, after: str | None = None) -> list[str]:
    """verify's argv: the checkpoint before, a model with other weights (or `after`) after, `request` as JSON."""
    (t / "request.json").write_text(json.dumps(request))
    after = after or _other_weights(c, t / "after.safetensors")
    return ["verify", "--before", c, "--after", after, "--request", str(t / "request.json"), "--out", o]


def _other_weights(source: str, path: Path) -> str:
    """The checkpoint with its first tensor changed: another model of the same architecture."""
    from safetensors import safe_open

    with safe_open(source, framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    first = next(iter(state))
    state[first] = state[first] + 1
    save_file(state, str(path), metadata=meta)
    return str(path)


def _vit_checkpoint(t: Path, source: str) -> str:
    """A prunelora checkpoint header of the tiny ViT on the same data (read as far as its config)."""
    from prunelora.store.checkpoints import read_config

    config, extra = read_config(source)
    config["model"] = {**config["model"], "name": "vit-tiny", "width": 16, "depth": 2, "heads": 2}
    path = t / "vit.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "config": json.dumps(config),
                                                         "extra": json.dumps(extra)})
    return str(path)


def _copy(source: str, path: Path) -> str:
    path.write_bytes(Path(source).read_bytes())
    return str(path)


def _file(path: Path) -> Path:
    path.write_text("keep me\n")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys, checkpoint, tiny_overrides, run_dir,
                                                  request):
    build, fragment = CASES[case]
    writable = case not in ("out-unwritable", "evaluate-out-unwritable", "tune-out-unwritable")
    unwritable = tmp_path if writable else request.getfixturevalue("unwritable")
    out = tmp_path / "out"
    argv = build(tmp_path, str(checkpoint), str(out), tiny_overrides, run_dir, unwritable)
    before = {folder: _tree(folder) for folder in (checkpoint.parent, run_dir, tmp_path)}
    capsys.readouterr()
    assert main([*argv, "-q"] if argv[0] not in ("export", "report") else argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunelora: error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""
    for folder, files in before.items():  # nothing written, nothing replaced
        assert _tree(folder) == files, folder
    assert not any(Path(p).exists() for p in (out, f"{out}.safetensors", f"{out}.yaml"))


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    from prunelora import __version__

    assert capsys.readouterr().out == f"prunelora {__version__}\n"


def test_force_removes_what_the_earlier_run_wrote(tmp_path, tiny_overrides, capsys):
    """--force over a run that saved models: its models, progress, tables and plots are gone, a file the user put
    there stays, and export no longer finds the earlier config's model."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "-q", *tiny_overrides, "methods=[finetune]", "save_models=true"]) == 0
    (out / "notes.txt").write_text("mine\n")
    assert main(["run", "--out", str(out), "-q", "--force", *tiny_overrides, "methods=[retrain]",
                 "eval.evidence=[]", "eval.curves=false"]) == 0
    assert (out / "notes.txt").read_text() == "mine\n"
    assert not (out / "models").exists() and not (out / "curves.png").exists()  # this config saves and draws neither
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["inputs.json", "seed0-retrain.json",
                                                                     "seed0-retrain.npz", "setup.json"]
    capsys.readouterr()
    assert main(["export", "--run", str(out), "--method", "finetune", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "did not run" in capsys.readouterr().err


def test_a_failed_write_after_training_keeps_the_work(tmp_path, tiny_overrides, capsys, monkeypatch):
    """The disk fails as the results are written: one error line, exit 1, no results.json and no half-written
    file; the same command then finishes from what progress/ kept."""
    from prunelora.report import write

    real = write.atomic_write

    def full_disk(path, data):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(write, "atomic_write", full_disk)
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *tiny_overrides, "methods=[finetune]", "eval.curves=false"]
    assert main([*argv, "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("prunelora: error: No space left on device: ") and "results.json" in err[0]
    assert not (out / "results.json").exists() and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(write, "atomic_write", real)
    assert main(argv) == 0
    assert "finetune: done before, loaded from" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["runs"][1]["method"] == "finetune"

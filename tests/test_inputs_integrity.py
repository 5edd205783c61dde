"""Inputs read as what they hold: image files of every PIL mode mapped onto the data set's 0..255 range (never
saturated), oversized and broken images refused by name; user text escaped in markdown; damaged results.json
refused by key; a verify reference or after-model that is another model's copy refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prunelora.config import DataConfig
from prunelora.data import load_dataset
from prunelora.data.vision import _as_8bit, _open
from prunelora.errors import UserError


def _read(path) -> np.ndarray:
    """The first pixel of an image file as the image-folder loader reads it (RGB)."""
    return np.asarray(_as_8bit(_open(path), path).convert("RGB"))[0, 0].tolist()


def _write(path, img: Image.Image, **kwargs):
    img.save(path, **kwargs)
    return path


def _palette(mode: str, index: int, alpha: int | None = None) -> Image.Image:
    img = Image.new(mode, (4, 4), index if alpha is None else (index, alpha))
    img.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    return img


def test_16_bit_greys_are_scaled_by_65535_not_saturated(tmp_path):
    """A 16-bit PNG folder loads grey with 32768 -> 128, 65535 -> 255 (RGB conversion made them all white)."""
    for name, value in (("dark", 257), ("mid", 32768), ("white", 65535)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(tmp_path / name / f"{i}.png")
    assert Image.open(tmp_path / "mid" / "0.png").mode == "I;16"
    data = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, test_fraction=1 / 3))
    assert data.in_chans == 1
    by_class = {data.classes[int(y)]: int(x[0, 3, 3]) for x, y in zip(data.x_train, data.y_train)}
    assert by_class == {"dark": 1, "mid": 128, "white": 255}


@pytest.mark.parametrize("make, expected", [
    (lambda p: _write(p / "a.tif", Image.frombytes("I;16B", (4, 4), np.full(16, 32768, ">u2").tobytes())), [128] * 3),
    (lambda p: _write(p / "a.tif", Image.fromarray(np.full((4, 4), 0, np.int32))), [128] * 3),  # int32's middle
    (lambda p: _write(p / "a.tif", Image.fromarray(np.full((4, 4), 2**31 - 1, np.int32))), [255] * 3),
    (lambda p: _write(p / "a.tif", Image.fromarray(np.full((4, 4), -(2**31), np.int32))), [0] * 3),
    (lambda p: _write(p / "a.tif", Image.fromarray(np.full((4, 4), 0.25, np.float32))), [64] * 3),
    (lambda p: _write(p / "a.tif", Image.fromarray(np.full((4, 4), 1.0, np.float32))), [255] * 3),
    (lambda p: _write(p / "a.png", Image.new("1", (4, 4), 1)), [255] * 3),
    (lambda p: _write(p / "a.png", _palette("P", 1)), [40, 50, 60]),
    (lambda p: _write(p / "a.png", _palette("P", 1), transparency=1), [40, 50, 60]),  # transparency dropped
    (lambda p: _write(p / "a.tif", _palette("PA", 1, 0)), [40, 50, 60]),  # alpha dropped
    (lambda p: _write(p / "a.png", Image.new("RGBA", (4, 4), (10, 20, 30, 0))), [10, 20, 30]),
    (lambda p: _write(p / "a.png", Image.new("LA", (4, 4), (77, 0))), [77] * 3),
    (lambda p: _write(p / "a.tif", Image.new("CMYK", (4, 4), (255, 0, 0, 0))), [0, 255, 255]),  # cyan
    (lambda p: _write(p / "a.jpg", Image.new("CMYK", (4, 4), (0, 0, 0, 0))), [255, 255, 255]),
    (lambda p: _write(p / "a.tif", Image.new("YCbCr", (4, 4), (76, 85, 255))), [254, 0, 0]),  # red
])
def test_every_mode_is_read_to_its_true_8_bit_value(tmp_path, make, expected):
    assert _read(make(tmp_path)) == expected


def test_lab_and_hsv_convert_and_unknown_modes_are_refused_by_name(tmp_path):
    lab = _read(_write(tmp_path / "lab.tif", Image.new("LAB", (4, 4), (255, 128, 128))))
    assert min(lab) >= 250  # L 100 is white
    assert np.asarray(_as_8bit(Image.new("HSV", (2, 2), (170, 255, 255)), tmp_path / "x")).tolist()[0][0] == [0, 0, 255]
    with pytest.raises(UserError, match=r"image '.*odd.png' has mode La"):
        _as_8bit(Image.new("La", (2, 2)), tmp_path / "odd.png")


def test_float_images_outside_0_1_are_refused(tmp_path):
    path = _write(tmp_path / "f.tif", Image.fromarray(np.full((4, 4), 200.0, np.float32)))
    with pytest.raises(UserError, match=r"'.*f.tif' is a float image \(mode F\) with values outside 0..1"):
        _read(path)


def _two_classes(root, size: int = 20):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (size, size), (i, 0, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("pixels, as_error", [(400, False), (144, True)])
def test_decompression_bombs_are_one_line_naming_the_file(tmp_path, monkeypatch, pixels, as_error):
    """Past twice PIL's limit it raises an error; past the limit it warns (an error under -W error)."""
    import warnings

    _two_classes(tmp_path, size=int(pixels**0.5))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        if as_error:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(UserError, match=rf"image '.*a/0.png' is too large to decode safely \(.*{pixels} pixels"):
            load_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_one_line_naming_the_file(tmp_path, fmt):
    _two_classes(tmp_path)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, fmt)
    (tmp_path / "b" / "9.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UserError, match=r"cannot read image '.*b/9.png' \(.*[Tt]runcated"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))


# ---------------------------------------------------------------- user text in markdown, LaTeX and plots

def _cells(line: str) -> int:
    """Cells of a markdown table row: pipes not escaped by a backslash split them."""
    import re

    return len(re.split(r"(?<!\\)\|", line.strip())) - 2


def _tables_hold_their_columns(text: str) -> None:
    """Every row of every table has its header's cell count."""
    width = None
    for line in text.splitlines() + [""]:
        if not line.startswith("|"):
            width = None
            continue
        width = width or _cells(line)
        assert _cells(line) == width, line


ODD = "a|b *c* `d` _e_ [f](g) <h> $i$ ~j~"


def _results(method: str = ODD, classes=("x|y", "c*d")) -> dict:
    env = {"device": "cpu", "device_name": "CPU | fast", "threads": 1, "memory_measure": "tensors",
           "versions": {"torch": "2", "peft": "0", "prunelora": "1"}, "date": "today"}
    config = {"data": {"name": "imagefolder"}, "model": {"name": "resnet18"}, "train": {}, "forget": {},
              "unlearn": {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "bn": "recalibrate"},
              "pruning": {"amount": 0.5, "targets": "paper"}, "lora": {"r": 4, "alpha": 8, "targets": "paper"},
              "eval": {"relearn_steps": 10, "relearn_samples": 8}}
    metrics = {"UA": 1.0, "MIA": 2.0, "RA": 3.0, "TA": 4.0,
               "quality_leaks": [{"id": 3, "class": classes[0], "epsilon": 1.5}], "quality_score": 0.5}
    runs = [{"method": m, "seed": 0, "metrics": dict(metrics), "info": {"trainable_params": 10, "history": [
        {"epoch": 1, "forget_acc": 50.0, "retain_acc": 90.0}]}} for m in ("retrain", method)]
    runs.append({"method": method, "seed": 1, "metrics": {}, "info": {}, "error": "loss | diverged"})
    data = {"classes": list(classes), "forget_classes": [0, 1],
            "sizes": {"forget": 2, "retain": 8, "test_retain": 4, "test_forget": 2}}
    return {"config": config, "runs": runs, "environment": env, "data": data}


def test_user_text_is_escaped_in_every_markdown_table():
    from prunelora.report.summary import summary_rows, to_latex, to_markdown
    from prunelora.report.tables import markdown_report

    report = markdown_report(_results())
    _tables_hold_their_columns(report)
    assert r"forget class(es) x\|y, c\*d" in report and r"(3 (x\|y, 1.50)" not in report
    assert r"a\|b \*c\* \`d\` \_e\_ \[f\](g) \<h\> \$i\$ \~j\~" in report
    assert r"(seed 1): loss \|diverged" not in report and r"loss \| diverged" in report
    table = to_markdown(summary_rows(_results()))
    _tables_hold_their_columns(table)
    assert "| retrain | 1 |" in table and "| grad_ascent |" in to_markdown(summary_rows(_results("grad_ascent")))
    latex = to_latex(summary_rows(_results("a&b_c%")))
    assert r"a\&b\_c\% & 1 &" in latex


def test_method_names_with_dollars_draw():
    from prunelora.report.plots import bars_png, curves_png
    from prunelora.report.summary import summary_rows

    results = _results(r"x$\frac$")
    assert bars_png(results, summary_rows(results))[:4] == b"\x89PNG"
    assert curves_png(results, summary_rows(results))[:4] == b"\x89PNG"


def test_receipt_markdown_escapes_classes_and_paths():
    from prunelora.workflows.verify import receipt_markdown

    check = {"name": "mia", "what": "balanced accuracy (%)", "before": 1.0, "after": 2.0, "rule": "<=",
             "threshold": 3.0, "passed": True}
    receipt = {"passed": True, "request": {"classes": ["a|b"], "forget_samples": 2, "ids_encoding": "int64",
                                           "forget_ids_sha256": "00"},
               "models": {"before": {"path": "/m|odels/b`.safetensors", "sha256": "ab"}},
               "compared_with": "x", "checks": [check],
               "leaks": [{"id": 1, "class": "a|b", "phi": 0.5, "p": 0.1, "leaks": False}],
               "environment": _results()["environment"]}
    text = receipt_markdown(receipt)
    _tables_hold_their_columns(text)
    assert r"| before | /m\|odels/b\`.safetensors | `ab` |" in text and r"forget class(es) a\|b," in text


# ---------------------------------------------------------------- results.json that the tables cannot read

def _bad(results: dict, change) -> dict:
    import copy

    results = copy.deepcopy(results)
    change(results)
    return results


def _minimal() -> dict:
    config = {"data": {}, "model": {}, "train": {}, "forget": {}}
    return {"config": config, "environment": {}, "runs": [
        {"method": "retrain", "seed": 0, "metrics": {"UA": 1.0, "MIA": 2.0, "RA": 3.0, "TA": None}, "info": {}}]}


BAD_RESULTS = {
    "UA-text": (lambda r: r["runs"][0]["metrics"].update(UA="12.5"), r"runs\[0\].metrics.UA is '12.5', not a number"),
    "UA-bool": (lambda r: r["runs"][0]["metrics"].update(UA=True), r"runs\[0\].metrics.UA is True, not a number"),
    "UA-missing": (lambda r: r["runs"][0]["metrics"].pop("UA"), r"runs\[0\].metrics has no 'UA'"),
    "probe-list": (lambda r: r["runs"][0]["metrics"].update(probe=[1]), r"runs\[0\].metrics.probe is \[1\]"),
    "time-text": (lambda r: r["runs"][0]["metrics"].update(time_s="3 s"), r"runs\[0\].metrics.time_s is '3 s'"),
    "params-text": (lambda r: r["runs"][0]["info"].update(trainable_params="10"), r"info.trainable_params is '10'"),
    "history-text": (lambda r: r["runs"][0]["info"].update(history=[{"epoch": 1, "forget_acc": "x", "retain_acc": 1}]),
                     r"info.history\[0\].forget_acc is 'x'"),
    "leaks-not-list": (lambda r: r["runs"][0]["metrics"].update(quality_leaks="x"), r"quality_leaks is not a list"),
    "error-not-text": (lambda r: r["runs"][0].update(error=3), r"runs\[0\].error is not text"),
    "runs-a-dict": (lambda r: r.update(runs={"a": 1}), r"'runs' is a dict, not a list"),
    "config-a-list": (lambda r: r.update(config=[]), r"'config' is a list, not a mapping"),
}


@pytest.mark.parametrize("case", BAD_RESULTS)
def test_report_refuses_results_the_tables_cannot_read(tmp_path, case):
    import json

    from prunelora.report.merge import load_runs

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "results.json").write_text(json.dumps(_minimal()))
    assert [r["method"] for r in load_runs([tmp_path / "ok"])["runs"]] == ["retrain"]
    change, message = BAD_RESULTS[case]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps(_bad(_minimal(), change)))
    with pytest.raises(UserError, match=rf"^'{tmp_path / 'bad' / 'results.json'}': .*{message}"):
        load_runs([tmp_path / "ok", tmp_path / "bad"])


STARTUP = """
import contextlib, io, json, sys
import prunelora.cli
codes = []
with contextlib.redirect_stderr(io.StringIO()) as err:
    for argv in {commands!r}:
        codes.append(prunelora.cli.main(argv))
print(json.dumps({{"codes": codes, "err": err.getvalue(), "loaded": sorted(
    m for m in ("torch", "matplotlib", "sklearn", "safetensors") if m in sys.modules)}}))
"""


def test_report_checks_every_input_before_pytorch(tmp_path):
    """A bad results.json (in the second directory) and an --out that cannot be written: exit 2, torch unloaded."""
    import json
    import subprocess
    import sys

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "results.json").write_text(json.dumps(_minimal()))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps(_bad(_minimal(), BAD_RESULTS["UA-text"][0])))
    (tmp_path / "afile").write_text("")
    (tmp_path / "out" / "report.md").mkdir(parents=True)
    commands = [["report", str(tmp_path / "ok"), str(tmp_path / "bad"), "--out", str(tmp_path / "o1")],
                ["report", str(tmp_path / "ok"), "--out", str(tmp_path / "afile")],
                ["report", str(tmp_path / "ok"), "--out", str(tmp_path / "out")]]
    result = subprocess.run([sys.executable, "-c", STARTUP.format(commands=commands)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["codes"] == [2, 2, 2], report
    assert report["loaded"] == [], report
    lines = report["err"].splitlines()
    assert len(lines) == 3 and "runs[0].metrics.UA is '12.5'" in lines[0] and "holds a folder 'report.md'" in lines[2]
    assert not (tmp_path / "o1").exists()


# ---------------------------------------------------------------- verify: the models are what they claim to be

def _resave(source, target, change_tensor: bool = False, note: str = "copy"):
    """`source`'s tensors (one of them moved by 1 when `change_tensor`) saved again with other metadata."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    state = load_file(str(source))
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata())
    meta["extra"] = json.dumps({**json.loads(meta["extra"]), "note": note})
    if change_tensor:
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name] + 1
    save_file(state, str(target), metadata=meta)
    return target


@pytest.fixture
def models(checkpoint, tmp_path):
    """(before, after: another model, after's copy with other metadata, before's copy with other metadata)."""
    after = _resave(checkpoint, tmp_path / "after.safetensors", change_tensor=True)
    # the copy's note differs from after's own ("copy"): its bytes then differ every time, not only when
    # safetensors happens to write the metadata in another order
    return (checkpoint, after, _resave(after, tmp_path / "after-copy.safetensors", note="second copy"),
            _resave(checkpoint, tmp_path / "before-copy.safetensors"))


def _check(tmp_path, before, after, reference=None, out=None):
    import json

    from prunelora.workflows.verify import check_inputs

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"classes": ["3"]}))
    return check_inputs(before, after, request, out or tmp_path / "receipt", reference)


def test_verify_refuses_a_reference_that_is_the_model_checked(tmp_path, models):
    before, after, after_copy, before_copy = models
    from prunelora.workflows.verify import sha256_file

    assert sha256_file(after_copy) != sha256_file(after)  # other bytes, the same tensors
    _, _, files = _check(tmp_path, before, after, reference=before_copy)  # another model: accepted
    assert files["after"][2] == _check(tmp_path, before, after_copy)[2]["after"][2]
    for reference in (after, after_copy):
        with pytest.raises(UserError, match=rf"--reference '{reference}' is the model being checked .*retrained "
                                            "without the forget samples"):
            _check(tmp_path, before, after, reference=reference)


def test_verify_refuses_an_after_model_with_the_before_models_tensors(tmp_path, models):
    before, _, _, before_copy = models
    with pytest.raises(UserError, match=r"hold the same model \(SHA-256 of the tensors .*nothing was unlearned"):
        _check(tmp_path, before, before_copy)


@pytest.mark.parametrize("name", ["receipt.json", "receipt.md"])
def test_verify_refuses_a_folder_where_the_receipt_goes(tmp_path, models, name):
    before, after, _, _ = models
    (tmp_path / "out" / name).mkdir(parents=True)
    with pytest.raises(UserError, match=rf"holds a folder '{name}' where this command writes a file"):
        _check(tmp_path, before, after, out=tmp_path / "out")

"""Settings refused before anything runs: what the config, the data set's published facts and the model built on the
meta device tell. Mistakes the config and the facts reveal are refused before PyTorch is imported (a fresh
interpreter per command: one line, exit code 2, well under 2 s); the pruning amount, the LoRA rank and the memory a
run needs are refused before the data set is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunelora import config as C
from prunelora.config import DataConfig, load_config
from prunelora.data import load_dataset
from prunelora.data.catalog import DATASETS, class_names
from prunelora.errors import UserError
from prunelora.models import classifier_name, create_model, get_spec, select_layers
from prunelora.models.pruning import prune_l2_structured, remove_channels
from prunelora.workflows import experiment as E
from prunelora.workflows import resolve as R
from prunelora.workflows.resolve import resolve_config

HEAVY = ("torch", "timm", "peft", "sklearn", "matplotlib", "safetensors", "optuna")

# runs one command in a fresh interpreter: its exit code, what it wrote to stderr, the heavy modules it imported
SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    import prunelora.cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = prunelora.cli.main({argv!r})
        except SystemExit as exit_:
            code = exit_.code
    print(json.dumps({{"code": code, "err": err.getvalue(), "loaded": sorted(m for m in {heavy!r} if m in sys.modules)}}))
""")


def billion_laughs(levels: int = 9) -> str:
    """A YAML alias bomb: 9 ** levels strings once expanded, a few hundred bytes as written."""
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
        prev = name
    return "\n".join(lines)


def _pre_torch_cases(tmp_path: Path, write: bool = True) -> dict[str, tuple[list[str], str]]:
    """{case: (argv, what the one line says)}; the files they read are written to `tmp_path` (unless not `write`)."""

    def _indices(name: str, text: str) -> str:
        if write:
            (tmp_path / f"{name}.txt").write_text(text)
        return f"forget.indices={tmp_path / name}.txt"

    bomb = tmp_path / "bomb.yaml"
    if write:
        bomb.write_text("variants:\n  v:\n    method: prunelora\n    hparams:\n" + textwrap.indent(billion_laughs(), "      "))
    out = str(tmp_path / "out")
    run = ["run", "--out", out]
    flat_bomb = billion_laughs().replace("\n", ", ")
    tune = ["tune", "--method", "ssd", "--out", out]
    return {
        "negative class": ([*run, "forget.classes=[-1]"], "forget class -1 is out of range: this data set has classes 0..9"),
        "fractional class": ([*run, "forget.classes=[3.5]"], "forget class '3.5' is not a class"),
        "unknown name": ([*run, "forget.classes=[unicorn]"], "forget class 'unicorn' is not a class of this data set; classes: bear"),
        "cifar name": ([*run, "data.name=cifar10", "data.root=/nowhere", "forget.classes=[zebra]"], "classes: airplane"),
        "all classes": ([*run, "data.name=digits", f"forget.classes=[{','.join(map(str, range(10)))}]"],
                        "names all 10 classes, which leaves nothing to retain"),
        "all by sequence": ([*run, "data.name=digits", "forget.sequence=[[0,1,2,3,4],[5,6,7,8,9]]"],
                            "forget.sequence names all 10 classes"),
        "name and index": ([*run, "forget.classes=[2,cat]"], "forget.classes names class 'cat' twice (2 and 'cat')"),
        "class twice": ([*run, "forget.classes=[3,3]"], "forget.classes names 3 twice"),
        "flat sequence": ([*run, "forget.sequence=[3,5]"], "forget.sequence=[[3],[5]] (two) or forget.sequence=[[3,5]]"),
        "evidence twice": ([*run, "eval.evidence=[probe,probe]"], "eval.evidence names 'probe' twice"),
        "index range": ([*run, _indices("range", "1 8000")],
                        "index 8000 is out of range; the train set has indices 0..7999"),
        "index negative": ([*run, _indices("negative", "1 -4")], "index -4 is out of range"),
        "index twice": ([*run, _indices("twice", "1 5 1")], "lists index 1 twice"),
        "index float": ([*run, _indices("float", "[1, 2.5]")], "must hold at least one integer index"),
        "index text": ([*run, _indices("text", "1 two")], "must hold integers"),
        "index empty": ([*run, _indices("empty", "")], "must hold at least one integer index"),
        "index every": ([*run, "data.name=digits", _indices("every", " ".join(map(str, range(1437))))],
                        "names all 1437 train samples"),
        "image size": ([*run, "data.image_size=1000000"], "needs about 9e+07 GB of memory to load"),
        "amount 0": ([*run, "pruning.amount=0"], "pruning.amount is 0, which prunes nothing: method prune_finetune"),
        "variant amount 0": ([*run, "variants.v.method=prunelora", "variants.v.pruning.amount=0", "methods=v"],
                             "variants.v.pruning.amount is 0"),
        "bomb file": (["run", "--config", str(bomb), "--out", out], f"config file '{bomb}' holds more than 100000 values"),
        "bomb override": ([*run, f"variants.v.hparams={{{flat_bomb}}}"], "override 'variants.v.hparams' holds more than"),
        "recursive alias": ([*run, "variants.v.hparams=&a {x: *a}"], "a recursive alias"),
        "tune inf": ([*tune, "--seconds", "inf"], "--seconds is inf; it must be a positive number of seconds, at most"),
        "tune nan": ([*tune, "--seconds", "nan"], "--seconds is nan"),
        "tune negative": ([*tune, "--seconds", "-5"], "--seconds is -5.0"),
        "tune zero": ([*tune, "--seconds", "0"], "--seconds is 0.0"),
        "tune months": ([*tune, "--seconds", "1e8"], "at most 2592000 (30 days)"),
        "tune trials": ([*tune, "--trials", "-2"], "--trials is -2; it must be at least 1 and at most 100000"),
        "tune many trials": ([*tune, "--trials", "1000000"], "--trials is 1000000"),
    }


CASES = list(_pre_torch_cases(Path("/nowhere"), write=False))


@pytest.mark.parametrize("case", CASES)
def test_refused_before_pytorch_in_one_line(tmp_path, case):
    argv, message = _pre_torch_cases(tmp_path)[case]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(argv=argv, heavy=HEAVY)], capture_output=True,
                            text=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["code"] == 2 and report["loaded"] == [], report
    assert report["err"].count("\n") == 1 and report["err"].startswith("prunelora: error: "), report["err"]
    assert message in report["err"], report["err"]
    assert seconds < 2.0, f"{case} took {seconds:.2f} s"
    assert not (tmp_path / "out").exists()


def test_a_cuda_device_that_is_not_there_is_refused_before_the_data_loads(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from prunelora.cli import main

    # a data set that is not there: its error would come first if the data were loaded before the device is checked
    for device in ("cuda", "cuda:1"):
        code = main(["run", "--out", str(tmp_path / "o"), f"device={device}", "data.name=cifar10", "data.root=/nowhere"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "no CUDA GPU is available" in err, err


def test_a_cuda_index_past_the_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(E, "pick_device", lambda name: torch.device(name))  # as on a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"device is cuda:3, but this machine has 1 CUDA GPU \(cuda:0..cuda:0\)"):
        E.make_context(resolve_config(load_config(overrides=["device=cuda:3"])), progress=False)


# ---------------------------------------------------------------- the data sets' facts


@pytest.mark.parametrize("name", ["digits", "animal-mnist"])
@pytest.mark.parametrize("fraction", [0.2, 0.37, 0.05])
def test_facts_of_the_embedded_sets_match_their_loaders(name, fraction):
    spec = DATASETS.get(name)
    data = load_dataset(DataConfig(name=name, test_fraction=fraction))
    assert spec.sizes(fraction) == (len(data.y_train), len(data.y_test))
    assert list(spec.classes) == data.classes and spec.channels == data.in_chans
    assert spec.image_size(None) == data.image_size == 12
    native = load_dataset(DataConfig(name=name, image_size=spec.native_size))
    assert native.image_size == spec.native_size and spec.image_size(20) == 20


def test_facts_of_the_sets_read_from_disk():
    from torchvision.datasets import FashionMNIST

    from prunelora.data.datasets import ANIMAL_CLASSES

    assert list(DATASETS.get("fashionmnist").classes) == FashionMNIST.classes
    assert list(DATASETS.get("animal-mnist").classes) == ANIMAL_CLASSES
    assert DATASETS.get("cifar10").classes[3] == "cat"  # the paper's forgotten class, by index and by name
    c100 = DATASETS.get("cifar100").classes
    assert len(set(c100)) == 100 and list(c100) == sorted(c100)  # the meta file lists the fine labels alphabetically
    assert {n: DATASETS.get(n).sizes(0.2) for n in ("cifar10", "cifar100", "mnist", "svhn")} == {
        "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "mnist": (60_000, 10_000), "svhn": (73_257, 26_032)}
    assert class_names(DataConfig(name="imagefolder")) is None


@pytest.mark.parametrize("split", [True, False])
def test_image_folder_classes_come_from_its_folders(tmp_path, split):
    for name in ("zebra", "ant", "cow"):
        for part in ("train", "test") if split else ("",):
            (tmp_path / part / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(tmp_path / part / name / f"{i}.png")
    (tmp_path / ".hidden").mkdir()
    config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.5)
    assert class_names(config) == load_dataset(config).classes == ["ant", "cow", "zebra"]
    cfg = load_config(overrides=["data.name=imagefolder", f"data.root={tmp_path}", "forget.classes=[ant,0]"])
    with pytest.raises(UserError, match="forget.classes names class 'ant' twice"):
        resolve_config(cfg)


# ---------------------------------------------------------------- the pruning amount and the LoRA rank


def _check(*overrides: str) -> None:
    cfg = resolve_config(load_config(overrides=list(overrides)))
    E.check_model(cfg, E.static_shape(cfg))


@pytest.mark.parametrize("overrides, message", [
    (["pruning.amount=0.999", "pruning.mode=remove"], (r"pruning.amount=0.999 prunes all of the 32 channels of layer "
     r"conv1 \(pruning.mode=remove\); amounts from 0.0001 to 0.9687")),
    (["pruning.amount=0.97", "pruning.mode=remove"], "prunes all of the 32 channels"),  # int(32 x 0.03) = 0 kept
    (["pruning.amount=0.99"], (r"prunes all of the 32 channels of layer conv1 \(pruning.mode=mask\); amounts from "
     "0.0157 to 0.9843")),
    (["pruning.amount=0.01"], "prunes none of the 32 channels"),  # round(0.32) = 0
    (["variants.v.method=prunelora", "variants.v.pruning.amount=0.999", "methods=v"], "variants.v.pruning.amount=0.999"),
    (["model.name=vit-tiny", "data.name=digits", "pruning.mode=remove", "pruning.amount=0.95", "methods=prunelora"],
     "prunes all of the 16 channels of layer blocks.3.attn.qkv"),  # Torch-Pruning prunes each head's 16 alike
    (["lora.r=1000", "model.width=4"], (r"lora.r=1000 is larger than every adapted layer; the widest, layer4.0.conv2 "
     r"\(32 outputs, 288 inputs\); use lora.r=288 or less \(32 already")),
    (["lora.r=37", "model.width=4", r"lora.targets=layer1\.0\.conv\d"],
     r"lora.r=37 is larger than every adapted layer; the widest, layer1.0.conv1 \(4 outputs, 36 inputs\)"),
    (["variants.v.method=lora", "variants.v.lora.r=3000", "methods=v"], "variants.v.lora.r=3000 is larger than"),
    (["model.name=vit-tiny", "data.name=digits", "lora.r=65", "lora.targets=blocks\\.0\\.attn\\.proj", "methods=lora"],
     r"lora.r=65 is larger than layer blocks.0.attn.proj \(64 outputs, 64 inputs\)"),
    # 192 qkv rows before channel removal, 96 after: r=97 fits the layer as built, not as pruned
    (["model.name=vit-tiny", "data.name=digits", "pruning.mode=remove", "pruning.targets=all", "lora.r=97",
      r"lora.targets=blocks\.0\.attn\.qkv", "methods=prunelora"],
     r"lora.r=97 is larger than layer blocks.0.attn.qkv \(96 outputs after pruning.mode=remove, 64 inputs\)"),
])
def test_settings_the_model_cannot_carry_out_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        _check(*overrides)


@pytest.mark.parametrize("overrides", [[], ["pruning.amount=0.9687", "pruning.mode=remove"], ["pruning.amount=0.9843"],
                                       ["pruning.amount=0.0157"], ["lora.r=2304"], ["model.width=4"],
                                       ["lora.r=36", "model.width=4", r"lora.targets=layer1\.0\.conv\d"]])
def test_the_bounds_the_messages_give_are_accepted(overrides):
    _check(*overrides)


@pytest.mark.parametrize("mode", ["mask", "remove"])
@pytest.mark.parametrize("amount", [0.01, 0.3, 0.5, 0.95, 0.97])
def test_the_counted_channels_are_what_pruning_prunes(mode, amount):
    """pruned_count, which the check relies on, against the pruning itself on a real model of width 32."""
    cfg = resolve_config(load_config(overrides=["data.name=digits"]))
    torch.manual_seed(0)
    model = create_model(cfg.model, 10, 1, 12)
    names = select_layers(model, get_spec(cfg.model.name).family, "paper", "prune")
    if mode == "mask":
        counts = {n: len(rows) for n, rows in prune_l2_structured(model, names, amount).items()}
    else:
        widths = remove_channels(model, names, amount, classifier_name(model), torch.zeros(1, 1, 12, 12))
        counts = {n: before - after for n, (before, after) in widths.items()}
    expected = E.pruned_count(32, amount, mode)
    if expected < 32:
        assert counts.get("conv1", 0) == expected
    else:  # what the check refuses: Torch-Pruning leaves a group it would empty whole, and so prunes nothing there
        assert mode == "remove" and "conv1" not in counts


def test_amount_zero_is_refused_for_pruning_methods_only():
    with pytest.raises(UserError, match="method prunelora needs an amount in"):
        resolve_config(load_config(overrides=["pruning.amount=0", "methods=prunelora"]))
    resolve_config(load_config(overrides=["pruning.amount=0", "methods=finetune,lora"]))


# ---------------------------------------------------------------- memory


def test_a_run_too_large_for_the_machine_is_refused_with_its_estimate(monkeypatch):
    monkeypatch.setattr(E, "memory_available", lambda: 24e9)
    with pytest.raises(UserError, match=r"this run needs about [0-9.e+]+ GB of memory \(model [0-9.e+]+, "
                                         r"activations [0-9.e+]+, data [0-9.e+]+ GB\), more than the 24 GB"):
        _check("model.width=1000000")
    with pytest.raises(UserError, match="more than the 24 GB"):
        _check("train.batch_size=1000000")


@pytest.mark.parametrize("path", ["configs/default.yaml", "configs/paper/cifar10_resnet50.yaml",
                                  "configs/paper/cifar10_vit.yaml", "configs/prunelora_variants.yaml",
                                  "configs/head_ablation_vit.yaml", "configs/vit_tiny.yaml"])
def test_the_shipped_configs_fit_a_24_gb_machine(monkeypatch, path):
    monkeypatch.setattr(E, "memory_available", lambda: 24e9)
    monkeypatch.setattr(R, "memory_available", lambda: 24e9)
    cfg = resolve_config(load_config(path))
    E.check_model(cfg, E.static_shape(cfg))
    assert R.check_data_memory(cfg, available=24e9) < 24e9


def test_the_activation_estimate_bounds_what_autograd_saves():
    """The measured factor: bytes saved for backward in a training step over `activation_elements` x 4."""
    ratios = {}
    for name, size in [("resnet18-tiny", 12), ("resnet50-tiny", 32), ("vit-tiny", 12)]:
        cfg = resolve_config(load_config(overrides=[f"model.name={name}", "data.name=digits"]))
        shape = E.DataShape(10, 1, size, 0)
        with torch.device("meta"):
            estimate = E.activation_elements(create_model(cfg.model, 10, 1, size), shape) * 4
        model, saved = create_model(cfg.model, 10, 1, size).train(), {}

        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved too, but not per sample

        def pack(t, saved=saved, weights=weights):
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(torch.randn(16, 1, size, size)), torch.zeros(16, dtype=torch.long))
        loss.backward()
        ratios[name] = sum(saved.values()) / 16 / estimate
    assert all(0.3 < r <= E.ACTIVATION_FACTOR for r in ratios.values()), ratios


# ---------------------------------------------------------------- YAML limits and list forms


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"config file '{path}' holds more than 100000 values once its aliases"):
        C.read_yaml(path)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("text, message", [
    ("a: " + "[" * 40 + "]" * 40, "nested deeper than 32 levels"),
    ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]", "more than 100 aliases"),
])
def test_yaml_limits(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        C.read_yaml(path)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20))
    with pytest.raises(UserError, match="is larger than 1 MiB"):
        C.read_yaml(big)


def test_ordinary_aliases_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("unlearn: &u {epochs: 2}\nvariants:\n  v: {method: prunelora, unlearn: *u}\nmethods: [v]\n")
    assert resolve_config(load_config(path)).variants["v"]["unlearn"] == {"epochs": 2}


@pytest.mark.parametrize("override, sequence", [("forget.sequence=[[3],[5]]", [[3], [5]]),
                                                ("forget.sequence=[[3,5]]", [[3, 5]]),
                                                ("forget.sequence=[[cat],[dog,horse]]", [["cat"], ["dog", "horse"]])])
def test_sequence_forms_that_are_accepted(override, sequence):
    assert load_config(overrides=[override]).forget.sequence == sequence


@pytest.mark.parametrize("override", ["forget.sequence=[3,5]", "forget.sequence=3", "forget.sequence=3,5",
                                      "forget.sequence=[[3],5]"])
def test_sequence_forms_that_are_refused(override):
    with pytest.raises(UserError, match=r"write each item as a list, e.g. forget.sequence=\[\[3\],\[5\]\]"):
        load_config(overrides=[override])


def test_top_level_lists_still_take_a_scalar():
    cfg = load_config(overrides=["methods=prunelora", "seeds=3", "forget.classes=cat", "eval.evidence=probe,relearn"])
    assert (cfg.methods, cfg.seeds, cfg.forget.classes, cfg.eval.evidence) == (["prunelora"], [3], ["cat"],
                                                                                ["probe", "relearn"])


def test_index_file_with_a_duplicate_is_refused_after_loading_too(tmp_path):
    from prunelora.data import read_indices

    path = tmp_path / "i.txt"
    path.write_text("4 1 9\n1")
    with pytest.raises(UserError, match="lists index 1 twice"):
        read_indices(path, 10)
    path.write_text("9 1")
    assert np.array_equal(read_indices(path, 10).numpy(), [1, 9])


# ---------------------------------------------------------------- the parser, on random input


def _leaf_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of the config's dataclass fields (sections expanded)."""
    import dataclasses
    import typing

    hints, keys = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


KEYS = _leaf_keys(C.ExperimentConfig) + ["hparams.ssd.alpha", "hparams.salun.share", "variants.v.method",
                                         "variants.v.lora.r", "variants.v.pruning.amount"]


def _scalars():
    from hypothesis import strategies as st

    return st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["inf", "-.inf", ".nan", "1e-3", "cat", "[3", "{a: 1", "&a x",
                                                            "*b", "[[3],[5]]", "[3,5]", "all", "~", "0x10", "1_000"]))


def test_random_overrides_load_or_raise_one_line():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.one_of(_scalars(), st.lists(_scalars(), max_size=3), st.lists(st.lists(_scalars(), max_size=2), max_size=2))
    overrides = st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(overrides)
    def check(pairs):
        texts = [f"{key}={json.dumps(v) if not isinstance(v, str) else v}" for key, v in pairs]
        try:
            resolve_config(load_config(overrides=texts))
        except UserError as err:
            assert str(err) and "\n" not in str(err), (texts, str(err))

    check()

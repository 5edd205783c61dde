"""Configuration: defaults, overrides, strict keys and types, YAML files, resolution of preset values."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunelora import config as C
from prunelora.errors import UserError
from prunelora.methods import METHODS
from prunelora.workflows.experiment import resolve_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))


def test_defaults():
    cfg = C.load_config()
    assert cfg == C.ExperimentConfig()
    assert cfg.seed == 0 and cfg.methods == ["retrain", "finetune", "prune_finetune", "lora", "prunelora"]
    assert cfg.data.name == "animal-mnist" and cfg.model.name == "resnet18-tiny"
    # no request given: the data set's default class (animal-mnist: cat; class 3 elsewhere)
    assert cfg.forget.classes is None and resolve_config(cfg).forget.classes == ["cat"]
    digits = C.load_config(overrides=["data.name=digits"])
    assert resolve_config(digits).forget.classes == [3]
    sequence = resolve_config(C.load_config(overrides=["forget.sequence=[[1],[2]]"])).forget
    assert sequence.classes is None and sequence.sequence == [[1], [2]]  # a sequence is the whole request
    assert (cfg.unlearn.epochs, cfg.unlearn.optimizer, cfg.unlearn.lr, cfg.unlearn.batch_size) == (5, "adam", 1e-3, 128)
    assert cfg.pruning.amount == 0.5 and cfg.lora.dropout == 0.1
    assert cfg.train.epochs is None and cfg.lora.r is None  # filled in by the model preset


@pytest.mark.parametrize("override, attr, expected", [
    ("seed=1", ("seed",), 1),
    ("methods=retrain,finetune", ("methods",), ["retrain", "finetune"]),
    ("methods=[lora]", ("methods",), ["lora"]),
    ("methods=prunelora", ("methods",), ["prunelora"]),
    ("forget.classes=[3]", ("forget", "classes"), [3]),
    ("forget.classes=[1,2]", ("forget", "classes"), [1, 2]),
    ("forget.classes=cat", ("forget", "classes"), ["cat"]),
    ("forget.classes=7", ("forget", "classes"), [7]),
    ("model.name=vit-tiny", ("model", "name"), "vit-tiny"),
    ("unlearn.epochs=5", ("unlearn", "epochs"), 5),
    ("unlearn.lr=0.01", ("unlearn", "lr"), 0.01),
    ("unlearn.lr=1", ("unlearn", "lr"), 1.0),
    ("unlearn.lr=1e-3", ("unlearn", "lr"), 1e-3),  # YAML 1.1 reads this as a string
    ("lora.r=null", ("lora", "r"), None),
    ("save_models=true", ("save_models",), True),
    ("data.root=/some/dir", ("data", "root"), "/some/dir"),
])
def test_overrides(override, attr, expected):
    node = C.load_config(overrides=[override])
    for part in attr:
        node = getattr(node, part)
    assert node == expected and type(node) is type(expected)


def test_later_overrides_win_and_others_keep_defaults():
    cfg = C.load_config(overrides=["seed=1", "unlearn.epochs=2", "seed=4"])
    assert cfg.seed == 4 and cfg.unlearn.epochs == 2 and cfg.unlearn.lr == 1e-3


@pytest.mark.parametrize("override, suggestion", [
    ("unlearn.epoch=5", "unlearn.epochs"),
    ("sed=1", "seed"),
    ("forget.class=[3]", "forget.classes"),
    ("model.widht=8", "model.width"),
])
def test_unknown_key_suggests_close_match(override, suggestion):
    with pytest.raises(UserError, match=f"unknown config key .*Did you mean '{suggestion}'"):
        C.load_config(overrides=[override])


def test_unknown_section():
    with pytest.raises(UserError, match="unknown config key 'bogus'.*Valid keys here: seed, seeds, methods"):
        C.load_config(overrides=["bogus.x=1"])


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "'seed' expects int"),
    ("seed=1.5", "'seed' expects int"),
    ("unlearn.lr=fast", "'unlearn.lr' expects float"),
    ("save_models=1", "'save_models' expects bool"),
    ("unlearn.epochs=true", "'unlearn.epochs' expects int"),
    ("data=3", "'data' must be a mapping"),
    ("unlearn.epochs=0", "^unlearn.epochs is 0; it must be a positive integer$"),
    ("pruning.amount=1.0", r"^pruning.amount is 1.0; it must be in \[0, 1\)"),
    ("unlearn.bn=sometimes", "^unlearn.bn is 'sometimes'; it must be one of recalibrate, train, frozen, refit$"),
    ("unlearn.optimizer=rmsprop", "^unlearn.optimizer is 'rmsprop'; it must be sgd, adam or adamw$"),
    ("data.image_size=4", "^data.image_size is 4; it must be at least 8 pixels$"),
    ("forget.classes=[]", "forget.classes is empty"),
    ("threads=0", "^threads is 0; it must be a positive integer$"),
    # seeds: what numpy and torch generators take, for the seed and every seed derived from it
    ("seed=-1", r"^seed is -1; it must be an integer from 0 to 2147483647$"),
    ("seed=18446744073709551616", r"^seed is 18446744073709551616; it must be an integer from 0 to 2147483647$"),
    ("seed=2147483648", r"^seed is 2147483648; it must be"),
    ("seeds=[0,-2]", r"^seeds\[1\] is -2; it must be an integer from 0 to 2147483647$"),
    ("data.split_seed=-1", r"^data.split_seed is -1; it must be an integer from 0"),
    ("forget.seed=4294967296", r"^forget.seed is 4294967296; it must be an integer from 0"),
    # non-finite numbers, wherever a float is read
    ("unlearn.lr=.inf", r"^unlearn.lr is inf; it must be a finite number$"),
    ("unlearn.lr=nan", r"^unlearn.lr is nan; it must be a finite number$"),
    ("train.lr=1e999", r"^train.lr is inf; it must be a finite number$"),
    ("lora.alpha=nan", r"^lora.alpha is nan; it must be a finite number$"),
    ("train.label_smoothing=nan", r"^train.label_smoothing is nan; it must be a finite number$"),
    ("eval.relearn_lr=-.inf", r"^eval.relearn_lr is -inf; it must be a finite number$"),
    # ranges and signs
    ("train.label_smoothing=5", r"^train.label_smoothing is 5.0; it must be in \[0, 1\)$"),
    ("unlearn.label_smoothing=-0.1", r"^unlearn.label_smoothing is -0.1; it must be in \[0, 1\)$"),
    ("lora.alpha=-16", r"^lora.alpha is -16.0; it must be a positive number"),
    ("lora.alpha=0", r"^lora.alpha is 0.0; it must be a positive number"),
    ("lora.dropout=1", r"^lora.dropout is 1.0; it must be in \[0, 1\)$"),
    ("unlearn.lr=0", r"^unlearn.lr is 0.0; it must be a positive finite number"),
    ("train.weight_decay=-1e-4", r"^train.weight_decay is -0.0001; it must be a finite number >= 0$"),
    ("data.test_fraction=1", r"^data.test_fraction is 1.0; it must be in \(0, 1\)"),
    ("forget.fraction=0", r"^forget.fraction is 0.0; it must be in \(0, 1\)"),
    ("eval.attack_shadows=1", r"^eval.attack_shadows is 1; it must be at least 2"),
    ("device=gpu", r"^device is 'gpu'; it must be auto, cpu, cuda or cuda:N$"),
    ("pruning.targets=layer[", r"^pruning.targets is 'layer\[', which is neither a preset nor a valid regex"),
    ("methods=all,lora", r"^methods is all,lora: 'all' already runs every method and cannot be combined"),
])
def test_wrong_values_raise(override, message):
    with pytest.raises(UserError, match=message):
        C.load_config(overrides=[override])


@pytest.mark.parametrize("override, message", [
    ("hparams.salun.share=1.5", r"^hparams.salun.share is 1.5; it must be in \(0, 1\]$"),
    ("hparams.scrub.gamma=-1", r"^hparams.scrub.gamma is -1.0; it must be a number >= 0$"),
    ("hparams.grad_ascent.lr=.inf", r"^hparams.grad_ascent.lr is inf; it must be a finite number$"),
    ("hparams.salun.share=.nan", r"^hparams.salun.share is nan; it must be a finite number$"),
    ("hparams.bad_teacher.retain_share=2", r"^hparams.bad_teacher.retain_share is 2.0; it must be in \[0, 1\]$"),
])
def test_wrong_method_settings_raise(override, message):
    with pytest.raises(UserError, match=message):
        resolve_config(C.load_config(overrides=[override]))


def test_largest_seed_derives_seeds_the_generators_take():
    """Every seed derived from the largest allowed one is accepted by torch.Generator and numpy: a method's seed,
    the loop's augmentation stream (* 7919 + rank + 1), LoRA dropout (* 1000 + layer), Bad Teacher (+ 1), SCRUB
    (+ epoch), the attack's shadows, MixUp's stream; and one past it is refused."""
    import numpy as np
    import torch

    from prunelora.workflows.unlearn import method_seed

    C.load_config(overrides=[f"seed={C.SEED_MAX}", f"data.split_seed={C.SEED_MAX}", f"forget.seed={C.SEED_MAX}"])
    for name in METHODS.names():
        s = method_seed(C.SEED_MAX, name)
        for derived in (s, s * 7919 + 64, s * 1000 + 999, s + 1, s + 100):
            torch.Generator().manual_seed(derived)
            np.random.default_rng(derived)
            np.random.default_rng([derived, 0x6D6978])
        np.random.seed(s % 2**32)
    with pytest.raises(UserError, match="seed is 2147483648"):
        C.load_config(overrides=[f"seed={C.SEED_MAX + 1}"])


def test_config_file_that_is_a_folder(tmp_path):
    with pytest.raises(UserError, match=f"^config file '{tmp_path}' is a directory; pass a YAML file to --config$"):
        C.load_config(tmp_path)


def test_timm_model_takes_no_architecture_keys():
    with pytest.raises(UserError, match=r"^model 'timm:nosuchnet' has no 'width'; remove model.width \(a timm model "
                                        r"is set by its name alone\)$"):
        resolve_config(C.load_config(overrides=["model.name=timm:nosuchnet", "model.width=4"]))


def test_parse_override():
    assert C.parse_override("a.b=[1,2]") == (["a", "b"], [1, 2])
    assert C.parse_override("seed=3") == (["seed"], 3)
    assert C.parse_override("x=") == (["x"], None)
    assert C.parse_override("data.root=a=b") == (["data", "root"], "a=b")  # only the first '=' splits
    assert C.parse_override("k=[unclosed") == (["k"], "[unclosed")  # not YAML: kept as text
    with pytest.raises(UserError, match="is not KEY=VALUE"):
        C.parse_override("seed")
    for bad in ("=3", "a..b=1", ".a=1"):
        with pytest.raises(UserError, match="empty key"):
            C.parse_override(bad)


def test_apply_overrides_nested():
    values = {"unlearn": {"lr": 0.1}, "seed": 0}
    out = C.apply_overrides(values, ["unlearn.epochs=3", "data.name=cifar10", "seed=2"])
    assert out == {"unlearn": {"lr": 0.1, "epochs": 3}, "data": {"name": "cifar10"}, "seed": 2}


def test_yaml_round_trip(tmp_path):
    cfg = C.load_config(overrides=["seed=7", "methods=lora,prunelora", "forget.classes=[1,2]", "model.width=8",
                                   "unlearn.bn=frozen", "data.root=/x"])
    text = C.dump_yaml(cfg)
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert C.read_yaml(path) == C.to_dict(cfg)
    assert C.load_config(path) == cfg
    # a resolved config round-trips too (this is what config.yaml and checkpoints hold)
    resolved = resolve_config(cfg)
    path.write_text(C.dump_yaml(resolved))
    assert resolve_config(C.load_config(path)) == resolved


def test_precedence_base_file_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 2\nunlearn:\n  epochs: 9\n")
    base = {"seed": 1, "unlearn": {"lr": 0.5, "epochs": 4}}
    cfg = C.load_config(path, ["unlearn.epochs=3"], base=base)
    assert cfg.seed == 2 and cfg.unlearn.lr == 0.5 and cfg.unlearn.epochs == 3
    assert base == {"seed": 1, "unlearn": {"lr": 0.5, "epochs": 4}}  # the base is not modified


def test_load_config_does_not_modify_base():
    base = {"model": {"name": "resnet18-tiny", "width": 4}, "seed": 1}
    cfg = C.load_config(overrides=["model.width=8", "seed=2"], base=base)
    assert cfg.model.width == 8 and cfg.seed == 2
    assert base == {"model": {"name": "resnet18-tiny", "width": 4}, "seed": 1}


def test_read_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        C.read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        C.read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        C.read_yaml(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert C.read_yaml(empty) == {}
    assert C.load_config(empty) == C.ExperimentConfig()


def test_default_config_resolves():
    cfg = C.load_config()
    resolved = resolve_config(cfg)
    assert cfg.train.epochs is None  # the input is not modified
    assert (resolved.train.epochs, resolved.train.optimizer, resolved.train.lr, resolved.train.weight_decay) == (
        8, "sgd", 0.1, 5e-4)
    assert (resolved.lora.r, resolved.lora.alpha) == (8, 16)


def test_vit_preset_values():
    resolved = resolve_config(C.load_config(overrides=["model.name=vit-tiny", "lora.alpha=8", "train.lr=0.01"]))
    assert (resolved.train.epochs, resolved.train.optimizer, resolved.train.lr) == (30, "adamw", 0.01)
    assert (resolved.lora.r, resolved.lora.alpha) == (16, 8.0)  # explicit values win over the preset's


def test_methods_all_and_duplicates():
    assert resolve_config(C.load_config(overrides=["methods=all"])).methods == METHODS.names()
    with pytest.raises(UserError, match="lists a method twice"):
        resolve_config(C.load_config(overrides=["methods=lora,lora"]))
    with pytest.raises(UserError, match="unknown method 'prunlora'. Did you mean 'prunelora'"):
        resolve_config(C.load_config(overrides=["methods=prunlora"]))
    with pytest.raises(UserError, match="unknown model 'resnet-18'. Did you mean 'resnet18'"):
        resolve_config(C.load_config(overrides=["model.name=resnet-18"]))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_shipped_config_files_resolve(path):
    cfg = resolve_config(C.load_config(path))
    assert cfg.train.epochs is not None and cfg.lora.r is not None

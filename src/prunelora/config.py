"""Experiment configuration: one dataclass per section, YAML load/save and dotted KEY=VALUE overrides (strict keys).

Every field has a comment with its meaning and unit. `None` means "the model preset's default";
`experiment.resolve_config` fills those in, and the resolved config is what runs and what is saved. The first
step of the flow: config -> experiment -> engine -> methods -> metrics -> report.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import UserError

BN_MODES = ("recalibrate", "train", "frozen", "refit")  # BatchNorm during unlearning, see UnlearnConfig.bn
DECAY_MODES = ("all", "weights")  # which parameters weight decay applies to, see TrainConfig.decay
PAPER_METHODS = ["retrain", "finetune", "prune_finetune", "lora", "prunelora"]


@dataclass
class DataConfig:
    name: str = "digits"  # a registered data set (see `prunelora list`)
    root: str | None = None  # directory holding the files, for data sets read from disk
    image_size: int | None = None  # side in pixels after resizing; None = the data set's own default
    test_fraction: float = 0.2  # share held out as test set, for data sets without their own (stratified)
    split_seed: int = 0  # seed of that fixed train/test split (independent of the experiment seed)
    download: bool = False  # fetch the files into data.root with torchvision's downloaders (needs internet)
    verify: bool = True  # check files against their published checksums (CIFAR, SVHN)
    augment: str | None = None  # none | crop | flip | crop_flip; None = the data set's (CIFAR: crop_flip, SVHN: crop)

    def __post_init__(self):
        _check(0.0 < self.test_fraction < 1.0, "data.test_fraction must be in (0, 1)")
        _check(self.image_size is None or self.image_size >= 8, "data.image_size must be at least 8 pixels")
        _check(self.augment in (None, "none", "crop", "flip", "crop_flip"),
               f"data.augment is {self.augment!r}; it must be none, crop, flip or crop_flip")


@dataclass
class ModelConfig:
    name: str = "resnet18-tiny"  # a registered model preset (see `prunelora list`) or timm:<any timm model>
    width: int | None = None  # ResNet: channels of the first stage; ViT: embedding width
    depth: int | None = None  # ViT: number of transformer blocks
    heads: int | None = None  # ViT: attention heads per block
    patch_size: int | None = None  # ViT: patch side in pixels
    init: str | None = None  # start from these weights (safetensors, or a state dict .pt read weights_only)
    pretrained: bool = False  # timm:<name> models: fetch timm's pretrained weights (needs internet)

    def __post_init__(self):
        for key in ("width", "depth", "heads", "patch_size"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"model.{key} must be a positive integer")


@dataclass
class TrainConfig:
    """Recipe of the original model, and of `retrain` (the same recipe on the retain set only)."""

    epochs: int | None = None  # None = the model preset's
    batch_size: int = 128  # images per step
    optimizer: str | None = None  # sgd (momentum 0.9, Nesterov) | adam | adamw; None = preset's
    lr: float | None = None  # peak learning rate of the schedule; None = preset's
    weight_decay: float | None = None  # None = preset's
    schedule: str = "onecycle"  # onecycle (warm-up then cosine decay, per step) | constant
    label_smoothing: float = 0.0
    # MixUp: each sample of a shuffled batch mixed with the one before it (torchvision's MixUp), with weight
    # lambda ~ Beta(mixup, mixup) drawn per batch, and so its loss; 0 = off
    mixup: float = 0.0
    # which parameters weight decay applies to. all | weights: only those with ndim >= 2 that are not position
    # embeddings or class/register tokens (biases and norm parameters undecayed, as the authors' ViT recipe)
    decay: str = "all"

    def __post_init__(self):
        check_recipe("train", self)
        _check(math.isfinite(self.mixup) and self.mixup >= 0,
               f"train.mixup is {self.mixup}; it must be a finite number >= 0 (0 = off)")
        _check(self.decay in DECAY_MODES, f"train.decay is {self.decay!r}; it must be one of {', '.join(DECAY_MODES)}")


@dataclass
class UnlearnConfig:
    """Recipe of every unlearning method that fine-tunes (the paper: Adam, lr 1e-3, batch 128, 5 epochs)."""

    epochs: int = 5
    batch_size: int = 128  # images per step
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    # BatchNorm during unlearning. recalibrate: train as usual, then recompute the running statistics
    # over the retain set (one pass, no gradient); train: the paper's plain fine-tuning, running statistics
    # as updated during training; frozen: BatchNorm kept in eval mode (statistics of the original model);
    # refit: statistics recomputed over the retain set before training, then BatchNorm kept in eval mode.
    bn: str = "recalibrate"
    # augment unlearning batches with the data set's augmentation; off as in the authors' unlearning loaders
    # (ToTensor + Normalize only). The original and retrain always use it (their recipe is `train`'s)
    augment: bool = False

    def __post_init__(self):
        check_recipe("unlearn", self)


@dataclass
class PruningConfig:
    amount: float = 0.5  # share of output channels / rows zeroed in each target layer (by smallest L2 norm)
    targets: str = "paper"  # a preset of the model family (see `prunelora list`) or a regex over module names
    # the forgotten classes' rows of a pruned classifier head: l2 (by norm, like every row) | keep (never
    # pruned) | prune (always pruned); the ablation of where PruneLoRA's forgetting comes from
    forget_head_rows: str = "l2"
    # mask: zero the rows, shapes unchanged (the paper); remove: take the channels out of the network with
    # Torch-Pruning's dependency graph (same L2 criterion and ratio, the head kept whole): a smaller, faster model
    mode: str = "mask"

    def __post_init__(self):
        _check(0.0 <= self.amount < 1.0, "pruning.amount must be in [0, 1)")
        _check(self.mode in ("mask", "remove"), "pruning.mode must be mask or remove")
        _check(self.mode == "mask" or self.forget_head_rows == "l2",
               "pruning.forget_head_rows needs pruning.mode=mask (mode=remove keeps the head whole)")
        _check(self.forget_head_rows in ("l2", "keep", "prune"), "pruning.forget_head_rows must be l2, keep or prune")


@dataclass
class LoraConfig:
    r: int | None = None  # rank; None = preset's (ResNet 8, ViT 16)
    alpha: float | None = None  # scaling numerator (update scaled by alpha / r); None = preset's
    dropout: float = 0.1  # dropout on the adapter input
    targets: str = "paper"  # a preset of the model family (see `prunelora list`) or a regex over module names

    def __post_init__(self):
        _check(self.r is None or self.r > 0, "lora.r must be a positive integer")
        _check(0.0 <= self.dropout < 1.0, "lora.dropout must be in [0, 1)")


@dataclass
class ForgetConfig:
    """The deletion request: one of classes, fraction, indices or sequence (none set = the data set's default
    class: cat for animal-mnist, class 3 elsewhere)."""

    classes: list[int | str] | None = None  # classes to forget (index or name)
    fraction: float | None = None  # forget this share of the train samples, drawn at random across classes
    indices: str | None = None  # a file of train-set indices to forget (whitespace/comma separated, or a JSON list)
    seed: int = 0  # seed of the random draw of `fraction` (fixed across experiment seeds: the same request)
    # class requests that arrive one after another, each applied to the model the previous one left,
    # e.g. [[3], [5], [8]]; every metric is reported after each request, against a retrain without all so far
    sequence: list[list[int | str]] | None = None

    def __post_init__(self):
        given = [k for k in ("classes", "fraction", "indices", "sequence") if getattr(self, k) is not None]
        if len(given) > 1:
            raise UserError(f"forget.{given[0]} and forget.{given[-1]} are both set; a request is one of them "
                            f"(set the other to null, e.g. forget.classes=null)")
        _check(self.classes is None or len(self.classes) > 0,
               "forget.classes is empty: name at least one class, e.g. forget.classes=[3]")
        _check(self.fraction is None or 0.0 < self.fraction < 1.0, "forget.fraction must be in (0, 1), e.g. 0.1")
        _check(self.sequence is None or (len(self.sequence) > 0 and all(len(r) > 0 for r in self.sequence)),
               "forget.sequence needs at least one non-empty request, e.g. forget.sequence=[[3],[5]]")

    @property
    def kind(self) -> str:
        """classes | samples"""
        return "samples" if self.fraction is not None or self.indices is not None else "classes"


@dataclass
class EvalConfig:
    batch_size: int = 512  # images per forward pass when evaluating
    # evidence metrics computed for every model beside UA/MIA/RA/TA (see `prunelora list`); [] for none
    evidence: list[str] = field(default_factory=lambda: ["probe", "relearn", "divergence"])
    relearn_samples: int = 8  # forget samples the relearning attack trains on (plus 4x as many retain samples)
    relearn_steps: int = 10  # full-batch Adam steps of the relearning attack
    relearn_lr: float = 1e-3
    # record forget accuracy (100 - UA) and RA after every unlearning epoch, measured as the table is (LoRA merged,
    # BatchNorm recalibrated, the whole train set): the report's curves.png. About two forward passes over the
    # train set per epoch, left out of the method's time; off by default to keep the default run short
    curves: bool = False
    attack_shadows: int = 4  # shadow models retrained from scratch for the `attack` metric (opt-in: it trains them)

    def __post_init__(self):
        _check(self.batch_size > 0, "eval.batch_size must be a positive integer")
        _check(self.relearn_samples > 0 and self.relearn_steps > 0, "eval.relearn_samples and eval.relearn_steps must be positive")
        _check(self.relearn_lr > 0, "eval.relearn_lr must be positive")
        _check(self.attack_shadows >= 2, "eval.attack_shadows must be at least 2 (a spread needs two models)")


@dataclass
class ExperimentConfig:
    seed: int = 0  # seeds model initialisation, batch order, dropout and the attack's subsampling
    seeds: list[int] = field(default_factory=list)  # several seeds in one run (then `seed` is not used)
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))  # or "all"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads for PyTorch; None = all cores
    save_models: bool = False  # also write each method's model to OUT/models/<method>.safetensors
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    # NHWC memory format for convolutions. None: on CUDA only. true also on the CPU, where training steps ran
    # 4-11% faster on two cores (docs/performance.md); off there by default, since it changes the numerics
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the model for training (slow start, faster steps on GPUs)
    cache: bool = True  # reuse the original and retrain from the on-disk cache ($PRUNELORA_CACHE) when identical
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    forget: ForgetConfig = field(default_factory=ForgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # per-method hyper-parameters, hparams.<method>.<key>=VALUE (each method's keys: `prunelora list`);
    # the resolved config lists every key of every method that ran
    hparams: dict[str, dict] = field(default_factory=dict)
    # named variants of a method, runnable by name in `methods`: variants.<name>.method=<method> plus
    # overrides of the unlearn / pruning / lora / hparams sections, e.g. variants.pl_r4.lora.r=4
    variants: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        _check(len(self.methods) > 0, "methods is empty: name at least one, e.g. methods=prunelora")
        _check(self.threads is None or self.threads > 0, "threads must be a positive integer")
        _check(len(set(self.seeds)) == len(self.seeds), "seeds lists a seed twice; name each once")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def check_recipe(section: str, recipe: Any) -> None:
    """The checks every recipe section shares (train, unlearn, a method's hparams), naming `section` in the error."""
    _check(recipe.epochs is None or recipe.epochs > 0, f"{section}.epochs must be a positive integer")
    _check(recipe.batch_size is None or recipe.batch_size > 0, f"{section}.batch_size must be a positive integer")
    _check(recipe.weight_decay is None or recipe.weight_decay >= 0, f"{section}.weight_decay must be >= 0")
    _check(recipe.lr is None or recipe.lr > 0, f"{section}.lr must be positive")
    _check(
        recipe.optimizer in (None, "sgd", "adam", "adamw"), f"{section}.optimizer must be sgd, adam or adamw"
    )
    _check(getattr(recipe, "bn", None) in (None, *BN_MODES), f"{section}.bn must be one of {', '.join(BN_MODES)}")
    _check(getattr(recipe, "schedule", "constant") in ("onecycle", "constant"), f"{section}.schedule must be onecycle or constant")


# ---------------------------------------------------------------- dict <-> dataclass, with strict keys


def from_dict(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are a UserError."""
    if not isinstance(values, dict):
        raise UserError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise UserError(f"unknown config key '{prefix}{key}'.{hint} Valid keys here: {', '.join(known)}.")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0])
    if origin is dict or hint is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' expects a mapping of keys to values, got {value!r}")
        if not args:  # a plain dict: checked later by whoever reads it
            return copy.deepcopy(value)
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(args[0], v, key) for v in value]
    return _scalar(hint, value, key)


def _scalar(hint: type, value: Any, key: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is bool and isinstance(value, bool):
        return value
    raise UserError(f"config key '{key}' expects {hint.__name__}, got {value!r}")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


# ---------------------------------------------------------------- files and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=[1,2]' -> (['a', 'b'], [1, 2]); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise UserError(f"override '{text}' is not KEY=VALUE; write it like seed=1 or forget.classes=[3]")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' has an empty key; write it like unlearn.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (validation happens in `from_dict`)."""
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return values


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config file '{path}' is not valid YAML ({first}); fix the file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys to values")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> ExperimentConfig:
    """The config from defaults <- `base` <- YAML file <- overrides (later wins)."""
    values = copy.deepcopy(base or {})
    if path is not None:
        values = merge(values, read_yaml(path))
    values = apply_overrides(values, list(overrides))
    return from_dict(ExperimentConfig, values)


def merge(a: dict, b: dict) -> dict:
    """`a` updated with `b`, nested mappings merged key by key (b wins); neither is modified."""
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_yaml(config: Any) -> str:
    values = to_dict(config) if dataclasses.is_dataclass(config) else config
    return yaml.safe_dump(values, sort_keys=False)

"""What methods exist, read without importing PyTorch: each method's name, summary, the config sections it uses,
its own settings (`hparams.<method>.<key>`, a dataclass checked when the config is read) and where its function
lives, imported only when it runs. `prunelora list` and every config check read this module alone.

The order of the declarations below is the order `methods=all` runs and `prunelora list` shows them: the paper's
methods, then the baselines. A method's reference defaults and ours are in its module's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..config import PAPER_METHODS, require
from ..registry import Registry, resolve

# ---------------------------------------------------------------- search spaces (`prunelora tune`)


@dataclass(frozen=True)
class Log:
    """A number drawn log-uniformly from [low, high] (learning rates, loss weights)."""

    low: float
    high: float

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class Uniform:
    """A number drawn uniformly from [low, high]."""

    low: float
    high: float

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class Int:
    """An integer from [low, high], log-uniformly when `log` (epochs over a wide range)."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Choice:
    """One of a few values."""

    values: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))


# the recipe of a method trained on the retain set: 57 steps per epoch on the default
RECIPE_SPACE = {"lr": Log(1e-4, 1e-2), "epochs": Int(1, 10)}
# methods trained on the forget set alone see 7 steps per epoch on the default (800 samples) against about 70 in
# their references (CIFAR-10's 4,500): epochs and batch size cover the references' step counts (88 to 790)
FORGET_ONLY_SPACE = {"lr": Log(1e-5, 1e-1), "epochs": Int(1, 30, log=True), "batch_size": Choice((32, 64, 128))}


@dataclass
class MethodConfig:
    """A method's own hyper-parameters (hparams.<method>.<key>); this base has none."""

    # what `prunelora tune` searches: {hparams key: Log | Uniform | Int | Choice}; empty = nothing to tune
    space: ClassVar[dict] = {}

    def apply(self, recipe):
        return recipe


@dataclass
class RecipeConfig(MethodConfig):
    """The hyper-parameters of a method that trains with the `unlearn` recipe: where it differs from that
    section (None = the section's value). A method's own config subclasses this, adds its fields and may
    set other defaults (e.g. gradient ascent's smaller learning rate)."""

    space: ClassVar[dict] = RECIPE_SPACE
    epochs: int | None = None  # passes over the method's main data stream
    lr: float | None = None
    optimizer: str | None = None  # sgd | adam | adamw
    batch_size: int | None = None  # images per step
    weight_decay: float | None = None
    bn: str | None = None  # BatchNorm mode (see unlearn.bn)

    def apply(self, recipe):
        """`recipe` (an engine.Recipe) with this method's values where they are set."""
        for f in fields(RecipeConfig):
            value = getattr(self, f.name)
            if value is not None:
                setattr(recipe, f.name, value)
        return recipe


@dataclass(frozen=True)
class MethodSpec:
    """A registered method."""

    name: str
    function: Callable | str  # (model, task, ctx) -> Unlearned, or 'module:function', imported when first run
    summary: str
    uses: tuple[str, ...]  # config sections that set this method's hyper-parameters
    config: type[MethodConfig] = RecipeConfig  # its own hyper-parameters (hparams.<name>.<key>)
    modalities: tuple[str, ...] = ("image",)  # the data it runs on: image, text (a data set's catalog modality)

    @property
    def fn(self) -> Callable:
        return resolve(self.function)


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str, summary: str, uses: tuple[str, ...] = ("unlearn",), config: type[MethodConfig] = RecipeConfig,
    modalities: tuple[str, ...] = ("image",),
):
    """Register the decorated function as method `name` (`summary` for `prunelora list`; `uses`: the config
    sections its settings come from; `config`: its own hyper-parameters, `hparams.<name>.<key>`; `modalities`: the
    data it runs on)."""

    def wrap(fn):
        METHODS.add(name, MethodSpec(name, fn, summary, uses, config, modalities))
        return fn

    return wrap


# ---------------------------------------------------------------- each method's own settings


@dataclass
class ForgetOnlyConfig(RecipeConfig):
    """A method that trains on forget samples alone (SGD): its search covers steps too (epochs, batch size)."""

    space: ClassVar[dict] = FORGET_ONLY_SPACE
    # batches of forget samples alone would normalise with their own statistics, which the evaluated
    # model (running statistics of all data) never sees: measured, training then does not carry over
    bn: str | None = "frozen"
    optimizer: str | None = "sgd"


@dataclass
class GradAscentConfig(ForgetOnlyConfig):
    lr: float | None = 1e-2


FORGET_LOSSES = ("none", "graddiff", "npo")


@dataclass
class AdapterConfig(RecipeConfig):
    """PruneLoRA's and LoRA's settings: the recipe, and a forget term beside the retain loss on the adapters (the
    paper trains on the retain set alone: none). graddiff: alpha x retain NLL - gamma x forget NLL; npo: alpha x
    retain NLL + gamma x NPO(beta) of the forget answers against the model before unlearning (`losses.npo`)."""

    _name = "prunelora"  # (not a setting) the method whose hparams an error names
    forget_loss: str = "none"  # none | graddiff | npo
    alpha: float = 1.0  # weight of the retain loss when a forget term is on (open-unlearning's default)
    gamma: float = 1.0  # weight of the forget term
    beta: float = 0.1  # NPO's inverse temperature (its paper's and open-unlearning's TOFU setting)

    def __post_init__(self):
        require(self.forget_loss in FORGET_LOSSES, f"hparams.{self._name}.forget_loss", self.forget_loss,
                "none, graddiff or npo")
        for key in ("alpha", "gamma", "beta"):
            value = getattr(self, key)
            require(value > 0 and value != float("inf"), f"hparams.{self._name}.{key}", value, "a positive number")


@dataclass
class LoraMethodConfig(AdapterConfig):
    _name = "lora"


@dataclass
class NegGradPlusConfig(RecipeConfig):
    space: ClassVar[dict] = {**RECIPE_SPACE, "beta": Uniform(0.9, 0.9999)}
    beta: float = 0.999  # weight of the retain loss; 1 - beta weighs the (negated) forget loss

    def __post_init__(self):
        require(0.0 <= self.beta <= 1.0, "hparams.neggrad_plus.beta", self.beta, "in [0, 1]")


@dataclass
class L1SparseConfig(RecipeConfig):
    space: ClassVar[dict] = {**RECIPE_SPACE, "alpha": Log(1e-6, 1e-3)}
    alpha: float = 1e-4  # initial weight of the L1 penalty (per unit of summed |w|)

    def __post_init__(self):
        require(self.alpha >= 0, "hparams.l1_sparse.alpha", self.alpha, "a number >= 0")


@dataclass
class RandomLabelsConfig(RecipeConfig):
    _name = "random_labels"  # (not a setting) the method whose hparams an error names
    # batch: each forget sample's wrong label drawn anew in every batch (the reference); once: one draw per run
    redraw: str = "batch"

    def __post_init__(self):
        require(self.redraw in ("batch", "once"), f"hparams.{self._name}.redraw", self.redraw, "batch or once")


@dataclass
class SalUnConfig(RandomLabelsConfig):
    space: ClassVar[dict] = {**RECIPE_SPACE, "share": Uniform(0.1, 0.9)}
    share: float = 0.5  # share of all weights that may change (the salient ones)

    _name = "salun"

    def __post_init__(self):
        super().__post_init__()
        require(0.0 < self.share <= 1.0, "hparams.salun.share", self.share, "in (0, 1]")


@dataclass
class ScrubConfig(RecipeConfig):
    space: ClassVar[dict] = {**RECIPE_SPACE, "max_epochs": Int(0, 5), "alpha": Log(1e-4, 1.0)}
    max_epochs: int = 2  # epochs that begin with a max step over the forget set (msteps)
    temperature: float = 4.0  # distillation temperature T
    alpha: float = 0.001  # weight of the KL term on the retain set
    gamma: float = 0.99  # weight of the cross-entropy on the retain set

    def __post_init__(self):
        require(self.max_epochs >= 0, "hparams.scrub.max_epochs", self.max_epochs, "an integer >= 0")
        require(self.temperature > 0, "hparams.scrub.temperature", self.temperature, "a positive number")
        require(self.alpha >= 0, "hparams.scrub.alpha", self.alpha, "a number >= 0")
        require(self.gamma >= 0, "hparams.scrub.gamma", self.gamma, "a number >= 0")


@dataclass
class SSDConfig(RecipeConfig):
    space: ClassVar[dict] = {"alpha": Log(1.0, 100.0), "lam": Log(0.1, 10.0)}  # no training: nothing else acts
    alpha: float = 30.0  # selection weighting: dampen where I_f > alpha * I_D
    lam: float = 1.0  # dampening constant lambda: factor min(lambda * I_D / I_f, 1)

    def __post_init__(self):
        require(self.alpha > 0, "hparams.ssd.alpha", self.alpha, "a positive number")
        require(self.lam > 0, "hparams.ssd.lam", self.lam, "a positive number")


@dataclass
class BadTeacherConfig(RecipeConfig):
    space: ClassVar[dict] = {"lr": Log(1e-5, 1e-2), "epochs": Int(1, 5), "retain_share": Uniform(0.1, 1.0)}
    epochs: int | None = 1
    lr: float | None = 1e-3
    optimizer: str | None = "adam"
    temperature: float = 1.0  # KL temperature T
    retain_share: float = 0.3  # share of the retain set distilled from the original

    def __post_init__(self):
        require(0.0 <= self.retain_share <= 1.0, "hparams.bad_teacher.retain_share", self.retain_share, "in [0, 1]")
        require(self.temperature > 0, "hparams.bad_teacher.temperature", self.temperature, "a positive number")


@dataclass
class BoundaryShrinkConfig(ForgetOnlyConfig):
    lr: float | None = 1e-3
    bound: float = 0.1  # FGSM step size = L-inf bound, in [0, 1] pixel units

    def __post_init__(self):
        require(0.0 < self.bound <= 1.0, "hparams.boundary_shrink.bound", self.bound, "in (0, 1]")


# ---------------------------------------------------------------- the built-in methods, in `methods=all` order

for _name, _summary, _uses, _config in [
    ("retrain", "exact unlearning: train from scratch on the retain set (the original's recipe)", ("train",), MethodConfig),
    ("finetune", "fine-tune all weights on the retain set", ("unlearn",), RecipeConfig),
    ("prune_finetune", "L2-prune the target layers, then fine-tune all weights", ("unlearn", "pruning"), RecipeConfig),
    ("prunelora", "L2-prune, then LoRA on the pruned layers + head, on the retain set", ("unlearn", "pruning", "lora"),
     AdapterConfig),
    ("lora", "LoRA adapters + head on the retain set, no pruning", ("unlearn", "lora"), LoraMethodConfig),
    ("grad_ascent", "gradient ascent on the forget set (GA)", ("unlearn",), GradAscentConfig),
    ("neggrad_plus", "descend on retain, ascend on forget (NegGrad+)", ("unlearn",), NegGradPlusConfig),
    ("random_labels", "forget samples relabelled at random, plus retain (RL)", ("unlearn",), RandomLabelsConfig),
    ("l1_sparse", "fine-tune on retain with a decaying L1 penalty (l1-sparse)", ("unlearn",), L1SparseConfig),
    ("salun", "random labels on the weights salient to the forget loss (SalUn)", ("unlearn",), SalUnConfig),
    ("scrub", "teacher-student: away from the original on forget, close on retain (SCRUB)", ("unlearn",), ScrubConfig),
    ("ssd", "dampen weights far more important to forget than to all data (SSD)", ("unlearn",), SSDConfig),
    ("bad_teacher", "distil the original on retain, a random model on forget (Bad Teacher)", ("unlearn",),
     BadTeacherConfig),
    ("boundary_shrink", "fine-tune forget samples toward their nearest other class (Boundary Shrink)", ("unlearn",),
     BoundaryShrinkConfig),
]:
    # the paper's five run on text too (the rule on a Llama's Linear rows); the baselines are image-only so far
    _modalities = ("image", "text") if _name in PAPER_METHODS else ("image",)
    METHODS.add(_name, MethodSpec(_name, f"{__package__}.{_name}:{_name}", _summary, _uses, _config, _modalities))

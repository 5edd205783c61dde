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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import UserError

BN_MODES = ("recalibrate", "train", "frozen", "refit")  # BatchNorm during unlearning, see UnlearnConfig.bn
OPTIMIZERS = ("sgd", "adam", "adamw")  # what engine.loop.make_optimizer builds (sgd: momentum 0.9, Nesterov)
# learning-rate schedules, per batch (engine.loop.make_schedule); warmup_cosine: 5% linear warm-up, then cosine
# decay to 10% of the peak (the text preset's, as language-model recipes run)
SCHEDULES = ("onecycle", "constant", "warmup_cosine")
DECAY_MODES = ("all", "weights")  # which parameters weight decay applies to, see TrainConfig.decay
SELECT_MODES = ("last", "best")  # which epoch a method keeps, see EvalConfig.select
OBJECTIVES = ("gap", "retrain_free")  # validation objectives, see EvalConfig.objective
PAPER_METHODS = ["retrain", "finetune", "prune_finetune", "lora", "prunelora"]
# every seed (seed, seeds, data.split_seed, forget.seed) is in [0, SEED_MAX]: the seeds derived from it (a method's
# seed * 1_000_003 + ..., then * 7919 or * 1000 + ... inside the loops) stay within what torch.Generator (unsigned
# 64-bit) and numpy take
SEED_MAX = 2**31 - 1


@dataclass
class DataConfig:
    # a registered data set (see `prunelora list`). The default, animal-mnist at 12x12 with class cat forgotten, is a
    # miniature of the paper's regime: a class the original confuses with others (cat with dog and horse) and a
    # network that 50% pruning really damages; digits is the quick run (docs/results.md)
    name: str = "animal-mnist"
    root: str | None = None  # directory holding the files, for data sets read from disk
    image_size: int | None = None  # side in pixels after resizing; None = the data set's own default
    test_fraction: float = 0.2  # share held out as test set, for data sets without their own (stratified)
    split_seed: int = 0  # seed of that fixed train/test split (independent of the experiment seed)
    download: bool = False  # fetch the files into data.root with torchvision's downloaders (needs internet)
    verify: bool = True  # check files against their published checksums (CIFAR, SVHN)
    augment: str | None = None  # none | crop | flip | crop_flip; None = the data set's (CIFAR: crop_flip, SVHN: crop)
    # the generated text data set (authors): fictitious authors trained on (plus a tenth as many holdout authors and
    # one extra fact per author), and questions per author (at most 20, TOFU's count)
    authors: int = 200
    questions: int = 10

    def __post_init__(self):
        require(_finite(self.test_fraction) and 0.0 < self.test_fraction < 1.0, "data.test_fraction", self.test_fraction,
                "in (0, 1), e.g. 0.2")
        check_seed("data.split_seed", self.split_seed)
        require(self.image_size is None or self.image_size >= 8, "data.image_size", self.image_size, "at least 8 pixels")
        require(self.augment in (None, "none", "crop", "flip", "crop_flip"), "data.augment", self.augment,
                "none, crop, flip or crop_flip")
        require(2 <= self.authors <= 100_000, "data.authors", self.authors, "from 2 to 100000 authors")
        require(1 <= self.questions <= 20, "data.questions", self.questions, "from 1 to 20 questions per author")


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
            require(value is None or value > 0, f"model.{key}", value, "a positive integer")


@dataclass
class TrainConfig:
    """Recipe of the original model, and of `retrain` (the same recipe on the retain set only)."""

    epochs: int | None = None  # None = the model preset's
    batch_size: int | None = None  # samples (images, questions) per step; None = preset's (128 images, 32 questions)
    optimizer: str | None = None  # sgd (momentum 0.9, Nesterov) | adam | adamw; None = preset's
    lr: float | None = None  # peak learning rate of the schedule; None = preset's
    weight_decay: float | None = None  # None = preset's
    # onecycle (warm-up then cosine decay, per step) | constant | warmup_cosine; None = preset's (images: onecycle)
    schedule: str | None = None
    label_smoothing: float = 0.0
    # MixUp: each sample of a shuffled batch mixed with the one before it (torchvision's MixUp), with weight
    # lambda ~ Beta(mixup, mixup) drawn per batch, and so its loss; 0 = off
    mixup: float = 0.0
    # which parameters weight decay applies to. all | weights: only those with ndim >= 2 that are not position
    # embeddings or class/register tokens (biases and norm parameters undecayed, as the authors' ViT recipe)
    decay: str = "all"
    # clip the gradients' global L2 norm to this before each step; 0 = off; None = preset's (images 0, text 1.0)
    clip: float | None = None

    def __post_init__(self):
        check_recipe("train", self)
        require(self.clip is None or (_finite(self.clip) and self.clip >= 0), "train.clip", self.clip,
                "a finite number >= 0 (0 = off)")
        require(_finite(self.mixup) and self.mixup >= 0, "train.mixup", self.mixup, "a finite number >= 0 (0 = off)")
        require(self.decay in DECAY_MODES, "train.decay", self.decay, f"one of {', '.join(DECAY_MODES)}")


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
    # which rows go: l2 (the smallest L2 norm: the paper) | forget (the rows the forget set uses most relative to
    # the retain set: mean |activation| on forget samples over that on retain samples, selective pruning)
    importance: str = "l2"

    def __post_init__(self):
        require(_finite(self.amount) and 0.0 <= self.amount < 1.0, "pruning.amount", self.amount, "in [0, 1), e.g. 0.5")
        require(self.importance in ("l2", "forget"), "pruning.importance", self.importance, "l2 or forget")
        _check(self.importance == "l2" or (self.mode == "mask" and self.forget_head_rows == "l2"),
               "pruning.importance=forget takes pruning.mode=mask and pruning.forget_head_rows=l2")
        require(self.mode in ("mask", "remove"), "pruning.mode", self.mode, "mask or remove")
        require(self.forget_head_rows in ("l2", "keep", "prune"), "pruning.forget_head_rows", self.forget_head_rows,
                "l2, keep or prune")
        _check(self.mode == "mask" or self.forget_head_rows == "l2",
               "pruning.forget_head_rows needs pruning.mode=mask (mode=remove keeps the head whole)")
        check_targets("pruning.targets", self.targets)


@dataclass
class LoraConfig:
    r: int | None = None  # rank; None = preset's (ResNet 8, ViT 16)
    alpha: float | None = None  # scaling numerator (update scaled by alpha / r); None = preset's
    dropout: float = 0.1  # dropout on the adapter input
    targets: str = "paper"  # a preset of the model family (see `prunelora list`) or a regex over module names

    def __post_init__(self):
        require(self.r is None or self.r > 0, "lora.r", self.r, "a positive integer")
        require(self.alpha is None or (_finite(self.alpha) and self.alpha > 0), "lora.alpha", self.alpha,
                "a positive number (the update is scaled by alpha / r)")
        require(_finite(self.dropout) and 0.0 <= self.dropout < 1.0, "lora.dropout", self.dropout, "in [0, 1)")
        check_targets("lora.targets", self.targets)


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
        require(self.fraction is None or (_finite(self.fraction) and 0.0 < self.fraction < 1.0), "forget.fraction",
                self.fraction, "in (0, 1), e.g. 0.1")
        check_seed("forget.seed", self.seed)
        _check(self.sequence is None or (len(self.sequence) > 0 and all(len(r) > 0 for r in self.sequence)),
               "forget.sequence needs at least one non-empty request, e.g. forget.sequence=[[3],[5]]")
        check_unique("forget.classes", self.classes)
        # a class forgotten twice within a request, or again by a later one (whose model has already forgotten it)
        check_unique("forget.sequence", None if self.sequence is None else [c for r in self.sequence for c in r])

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
    relearn_steps: int = 10  # full-batch Adam steps of the relearning attack (text runs: 16, see resolve_text)
    relearn_lr: float = 1e-3  # the attack's Adam learning rate (text runs: 1e-4, see resolve_text)
    # text runs only: the held-out forget questions' ROUGE-L recall (0..1) whose first crossing `relearn_steps`
    # records (the steps the forgotten authors take to come back; None if they do not within the budget)
    relearn_level: float = 0.9
    # record forget accuracy (100 - UA) and RA after every unlearning epoch, measured as the table is (LoRA merged,
    # BatchNorm recalibrated, the whole train set): the report's curves.png. About two forward passes over the
    # train set per epoch, left out of the method's time; off by default to keep the default run short
    curves: bool = False
    attack_shadows: int = 4  # shadow models retrained from scratch for the `attack` metric (opt-in: it trains them)
    # which epoch of each method's training is kept. last | best: the epoch that scores best by `objective` on a
    # validation split carved from the train set (never the test set); that split is then held out of every model
    # of the run (original, retrain, methods), so best changes what they train on (docs/tuning in README)
    select: str = "last"
    # the validation objective of `select=best` and of `prunelora tune`, lower is better, in points. gap: mean
    # |UA, MIA, RA, validation accuracy - retrain's| on the validation split (retrain trained without it, cached);
    # retrain_free: mean of the forget-validation accuracy and 100 - the retain-validation accuracy (class requests)
    objective: str = "gap"
    val_fraction: float = 0.1  # share of each class of the train set carved out as the validation split
    val_seed: int = 0  # seed of that draw (fixed across experiment seeds)
    # models per side behind `forgetting_quality` and `klom`: N originals (the run's own and N - 1 more seeds), each
    # unlearned by the method, against N retrains (the attack's shadows, shared through the model cache). N limits
    # the score: the largest finite epsilon is just under ln(N - 1), and two sets of one distribution score F of
    # about 0.36 (N = 3), 0.26 (N = 4), 0.18 (N = 8) on their own (README)
    quality_models: int = 4
    quality_leaks: int = 10  # forget samples with the highest epsilon listed in the report (ids and classes)
    quality_bootstrap: int = 1000  # resamples of the forget samples behind the score's 95% interval
    # phi behind forgetting_quality. exact | challenge: the challenge's log(p + 1e-45) form, bounded at +-103.6, to
    # compare F with its leaderboard (docs/metrics.md)
    quality_phi: str = "exact"

    def __post_init__(self):
        require(self.quality_phi in ("exact", "challenge"), "eval.quality_phi", self.quality_phi, "exact or challenge")
        require(self.select in SELECT_MODES, "eval.select", self.select, f"one of {', '.join(SELECT_MODES)}")
        require(self.objective in OBJECTIVES, "eval.objective", self.objective, f"one of {', '.join(OBJECTIVES)}")
        require(_finite(self.val_fraction) and 0.0 < self.val_fraction <= 0.5, "eval.val_fraction", self.val_fraction,
                "in (0, 0.5], e.g. 0.1")
        check_seed("eval.val_seed", self.val_seed)
        require(self.batch_size > 0, "eval.batch_size", self.batch_size, "a positive integer")
        require(self.relearn_samples > 0, "eval.relearn_samples", self.relearn_samples, "a positive integer")
        require(self.relearn_steps > 0, "eval.relearn_steps", self.relearn_steps, "a positive integer")
        require(_finite(self.relearn_lr) and self.relearn_lr > 0, "eval.relearn_lr", self.relearn_lr, "a positive number")
        require(_finite(self.relearn_level) and 0.0 < self.relearn_level <= 1.0, "eval.relearn_level",
                self.relearn_level, "in (0, 1], e.g. 0.9")
        require(self.attack_shadows >= 2, "eval.attack_shadows", self.attack_shadows, "at least 2 (a spread needs two models)")
        require(self.quality_models >= 3, "eval.quality_models", self.quality_models,
                "at least 3 (with 2 models a side no finite epsilon earns points)")
        require(self.quality_leaks >= 0, "eval.quality_leaks", self.quality_leaks, "0 or more samples to list")
        require(self.quality_bootstrap >= 100, "eval.quality_bootstrap", self.quality_bootstrap,
                "at least 100 resamples")
        check_unique("eval.evidence", self.evidence)


@dataclass
class VerifyConfig:
    """Thresholds of the checks `prunelora verify` writes in its receipt. Against a retrained reference model when one
    is given; otherwise against held-out non-members (test samples of the forgotten classes, or the whole test set
    for a sample request) and the model before unlearning."""

    # forget accuracy may exceed what a model that never saw the samples gets by this many points: the reference's,
    # else 0 for whole classes (a class never trained on is never predicted) and held-out accuracy for samples
    forget_gap_max: float = 5.0
    # balanced accuracy (%) of a membership attack (a threshold on the logit-scaled confidence, chosen on half the
    # samples and applied to the other half) telling the forget samples from non-members: 50 = it cannot
    mia_max: float = 60.0
    leak_p: float = 0.01  # a forget sample leaks when the model is surer of it than of all but this share of non-members
    leak_share_max: float = 5.0  # % of forget samples that may leak (about leak_p x 100 leak by chance)
    ra_drop_max: float = 5.0  # points of retain accuracy the model may lose against the reference (else the before-model)
    ta_drop_max: float = 5.0  # the same for test accuracy on the remaining classes
    leaks: int = 10  # forget samples listed in the receipt, most leaking first

    def __post_init__(self):
        for key in ("forget_gap_max", "ra_drop_max", "ta_drop_max", "leak_share_max"):
            value = getattr(self, key)
            require(_finite(value) and 0 <= value <= 100, f"verify.{key}", value, "in [0, 100] points")
        require(_finite(self.mia_max) and 50 <= self.mia_max <= 100, "verify.mia_max", self.mia_max,
                "in [50, 100] (50 = the attack does no better than chance)")
        require(_finite(self.leak_p) and 0 < self.leak_p < 1, "verify.leak_p", self.leak_p, "in (0, 1), e.g. 0.01")
        require(self.leaks >= 0, "verify.leaks", self.leaks, "0 or more samples to list")


@dataclass
class ExperimentConfig:
    seed: int = 0  # seeds model initialisation, batch order, dropout and the attack's subsampling
    seeds: list[int] = field(default_factory=list)  # several seeds in one run (then `seed` is not used)
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))  # or "all"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads for PyTorch; None = all cores
    save_models: bool = False  # also write each method's model to OUT/models/<method>.safetensors
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    # bf16 autocast of the forward on a CPU that computes bf16 natively (AVX-512 BF16 or AMX): training steps 6-21%
    # faster on a 2-core AMD EPYC (docs/performance.md); off by default, since it changes every number
    cpu_bf16: bool = False
    # NHWC memory format for convolutions, on every device: measured faster on each CPU tried, by 1-24% a step
    # (docs/performance.md, "Channels-last on the CPU"). None: on CUDA only, the default until 2026-12-08, which a
    # config saved before then says and so reruns in the memory format it ran in; false: contiguous everywhere
    channels_last: bool | None = True
    # on the CPU, convolutions over maps within their kernel's reach (the default's 2x2 last stage) run as one
    # matrix product (models/small_maps.py): a Fine-tune step 11-18% faster with AVX2 kernels; it changes the last
    # digits, so a config saved before 2026-12-08 (no such key) reruns as it ran with small_map_convs=false
    small_map_convs: bool = True
    compile: bool = False  # torch.compile the model for training (slow start, faster steps on GPUs)
    # CUDA graphs for plain cross-entropy training steps (the original, retrain, finetune, prune_finetune, lora,
    # prunelora): each full batch replays one recorded step instead of launching its kernels one by one.
    # None: on CUDA (never on the CPU, where there are no graphs); false: every step eager
    cuda_graphs: bool | None = None
    cache: bool = True  # reuse the original and retrain from the on-disk cache ($PRUNELORA_CACHE) when identical
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    forget: ForgetConfig = field(default_factory=ForgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)  # thresholds of `prunelora verify`
    # per-method hyper-parameters, hparams.<method>.<key>=VALUE (each method's keys: `prunelora list`);
    # the resolved config lists every key of every method that ran
    hparams: dict[str, dict] = field(default_factory=dict)
    # named variants of a method, runnable by name in `methods`: variants.<name>.method=<method> plus
    # overrides of the unlearn / pruning / lora / hparams sections, e.g. variants.pl_r4.lora.r=4
    variants: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        _check(len(self.methods) > 0, "methods is empty: name at least one, e.g. methods=prunelora")
        if "all" in self.methods and len(self.methods) > 1:
            raise UserError(f"methods is {','.join(self.methods)}: 'all' already runs every method and cannot be "
                            "combined with other names; write methods=all, or list the methods you want")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "a positive integer")
        require(bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device)), "device", self.device, "auto, cpu, cuda or cuda:N")
        check_seed("seed", self.seed)
        for i, seed in enumerate(self.seeds):
            check_seed(f"seeds[{i}]", seed)
        _check(len(set(self.seeds)) == len(self.seeds), "seeds lists a seed twice; name each once")
        _check(self.eval.select == "last" or self.forget.sequence is None,
               "eval.select=best picks epochs for one request; a forget.sequence needs eval.select=last")
        _check(self.eval.objective != "retrain_free" or self.forget.kind == "classes",
               "eval.objective=retrain_free scores forgetting on held-out samples of the forgotten classes, which a "
               "request of samples does not have; use eval.objective=gap")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Unless `ok`, a UserError naming the key, its value and what is allowed: "lora.alpha is -16.0; it must be ..."."""
    if not ok:
        raise UserError(f"{key} is {value!r}; it must be {allowed}" if isinstance(value, str)
                        else f"{key} is {value}; it must be {allowed}")


def check_unique(key: str, values: list | None) -> None:
    """No value of the list `key` is named twice (3 and '3' are the same name: a class index written as text)."""
    seen = set()
    for value in values or []:
        _check(str(value) not in seen, f"{key} names {value!r} twice; name each once")
        seen.add(str(value))


def check_seed(key: str, seed: int) -> None:
    require(isinstance(seed, int) and 0 <= seed <= SEED_MAX, key, seed, f"an integer from 0 to {SEED_MAX}")


def check_targets(key: str, targets: str) -> None:
    """A layer selection is a preset name or a regex; a regex that does not compile is refused here (whether it
    selects any layer is known once the model is built: `experiment.check_layers`)."""
    try:
        re.compile(targets)
    except re.error as err:
        raise UserError(f"{key} is {targets!r}, which is neither a preset nor a valid regex ({err}); "
                        "see `prunelora list` for the presets") from None


def check_recipe(section: str, recipe: Any) -> None:
    """The checks every recipe section shares (train, unlearn, a method's hparams), naming `section` in the error."""
    require(recipe.epochs is None or recipe.epochs > 0, f"{section}.epochs", recipe.epochs, "a positive integer")
    require(recipe.batch_size is None or recipe.batch_size > 0, f"{section}.batch_size", recipe.batch_size,
            "a positive integer")
    require(recipe.weight_decay is None or (_finite(recipe.weight_decay) and recipe.weight_decay >= 0),
            f"{section}.weight_decay", recipe.weight_decay, "a finite number >= 0")
    require(recipe.lr is None or (_finite(recipe.lr) and recipe.lr > 0), f"{section}.lr", recipe.lr,
            "a positive finite number, e.g. 1e-3")
    require(recipe.optimizer in (None, *OPTIMIZERS), f"{section}.optimizer", recipe.optimizer,
            f"{', '.join(OPTIMIZERS[:-1])} or {OPTIMIZERS[-1]}")
    bn = getattr(recipe, "bn", None)
    require(bn in (None, *BN_MODES), f"{section}.bn", bn, f"one of {', '.join(BN_MODES)}")
    schedule = getattr(recipe, "schedule", "constant")
    require(schedule in (None, *SCHEDULES), f"{section}.schedule", schedule, f"one of {', '.join(SCHEDULES)}")
    smoothing = getattr(recipe, "label_smoothing", 0.0)
    require(_finite(smoothing) and 0.0 <= smoothing < 1.0, f"{section}.label_smoothing", smoothing, "in [0, 1)")


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


def _coerce(hint: Any, value: Any, key: str, nested: bool = False) -> Any:
    """`value` as type `hint`; `nested`: inside a list (where a scalar is no list)."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, nested)
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
        return _coerce_list(args[0], value, key, nested)
    return _scalar(hint, value, key)


def _coerce_list(item: Any, value: Any, key: str, nested: bool) -> list:
    """A list; only the outer list of a key may be written as a scalar or comma-separated text (methods=prunelora):
    in a list of lists, forget.sequence=[3,5] would be two requests or one, so each inner list must be written."""
    if not isinstance(value, (list, tuple)):
        if nested:
            raise UserError(f"{key} holds {value!r} where a list belongs; write each item as a list, "
                            f"e.g. {key}=[[3],[5]] (two) or {key}=[[3,5]] (one of two)")
        value = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
    return [_coerce(item, v, key, nested=True) for v in value]


def _scalar(hint: type, value: Any, key: str) -> Any:
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            number = float(value)
        except ValueError:
            number = None
        except OverflowError:  # an integer past float's range
            number = math.inf
        if number is not None:
            require(math.isfinite(number), key, number, "a finite number")
            return number
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

# what a config file (or an override's value) may hold: a config is a few hundred nodes; aliases are expanded into
# copies by everything that reads the values (merges, dataclasses.asdict, dumps), so a "billion laughs" file of a
# few lines would hang or exhaust memory there. Counted while the YAML is composed, before anything is built
MAX_YAML_BYTES = 1 << 20  # 1 MiB
MAX_YAML_DEPTH = 32  # nested mappings / lists
MAX_YAML_ALIASES = 100  # *alias references
MAX_YAML_NODES = 100_000  # nodes once every alias is expanded


class YamlLimit(Exception):
    """The YAML exceeds one of the limits above (the message names which)."""


class LimitedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses, while composing, a document nested deeper than MAX_YAML_DEPTH, with more than
    MAX_YAML_ALIASES aliases, or of more than MAX_YAML_NODES nodes once its aliases are expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth, self._aliases, self._nodes = 0, 0, 0
        self._sizes: dict[int, int] = {}  # id(node) -> its node count, aliases expanded (for anchored nodes)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YamlLimit(f"more than {MAX_YAML_ALIASES} aliases")
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # a node that holds itself: every reader would recurse forever
                raise YamlLimit("a recursive alias (a node that holds itself)")
            self._count(self._sizes[id(node)])
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        before = self._nodes
        self._count(1)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = self._nodes - before
        return node

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_YAML_NODES:
            raise YamlLimit(f"more than {MAX_YAML_NODES} values once its aliases are expanded")


def yaml_load(text: str, what: str) -> Any:
    """`text` parsed as YAML within the limits above; `what` names it in the error (a file, an override)."""
    if len(text.encode(errors="replace")) > MAX_YAML_BYTES:
        raise UserError(f"{what} is larger than {MAX_YAML_BYTES >> 20} MiB, the limit of a config; shorten it")
    loader = LimitedLoader(text)
    try:
        return loader.get_single_data()
    except YamlLimit as err:
        raise UserError(f"{what} holds {err}, beyond what a config may hold; write the values out") from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=[1,2]' -> (['a', 'b'], [1, 2]); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise UserError(f"override '{text}' is not KEY=VALUE; write it like seed=1 or forget.classes=[3]")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' has an empty key; write it like unlearn.epochs=5")
    try:
        value = yaml_load(raw, f"override '{key}'") if raw.strip() else None
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
    if path.is_dir():
        raise UserError(f"config file '{path}' is a directory; pass a YAML file to --config")
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:  # before reading it whole
            raise UserError(f"config file '{path}' is larger than {MAX_YAML_BYTES >> 20} MiB, the limit of a config; "
                            "pass the config file itself")
        values = yaml_load(path.read_text(), f"config file '{path}'")
    except OSError as err:
        raise UserError(f"config file '{path}' cannot be read ({err.strerror}); pass a readable YAML file") from None
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

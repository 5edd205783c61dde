"""The engine: the one training loop (`fit`) that the original, retrain, every method and the evidence metrics
train with, its recipe, optimizers and schedules, MixUp, and BatchNorm handling (`recalibrate_bn`).

It reads images from `ImageData` (uint8, on the device), augments and normalises them per batch, steps the
optimizer, reports every step to the context's meter and stops on a diverging loss (`FloatingPointError`)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import config as C
from ..data import ImageData
from ..data.augment import augment
from ..data.catalog import is_text
from . import dist
from .context import Context
from .graphs import GraphedStep


@dataclass
class Recipe:
    """A resolved training recipe (no `None`s): what `fit` needs to train."""

    epochs: int
    batch_size: int  # images per step
    optimizer: str  # sgd | adam | adamw
    lr: float  # peak learning rate
    weight_decay: float
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    bn: str = "train"  # train | frozen | recalibrate | refit (see UnlearnConfig.bn)
    augment: bool = True  # the data set's training augmentation (unlearning: unlearn.augment, off by default)
    mixup: float = 0.0  # MixUp's Beta(alpha, alpha) parameter; 0 = off (train.mixup; unlearning has none)
    decay: str = "all"  # which parameters weight decay applies to: all | weights (see TrainConfig.decay)
    clip: float = 0.0  # the gradients' global L2 norm is clipped to this before each step; 0 = off


def recipe_from(section) -> Recipe:
    """The Recipe of a resolved TrainConfig or UnlearnConfig."""
    return Recipe(
        section.epochs, section.batch_size, section.optimizer, section.lr, section.weight_decay,
        section.schedule, section.label_smoothing, getattr(section, "bn", "train"), getattr(section, "augment", True),
        mixup=getattr(section, "mixup", 0.0), decay=getattr(section, "decay", "all"),
        clip=getattr(section, "clip", None) or 0.0,
    )


# position embeddings and class / distillation / register tokens (timm's no_weight_decay names, Swin's
# relative position tables): never decayed under decay=weights, whatever their shape
_NO_DECAY = re.compile(r"pos_embed|position|(cls|dist|reg)_token")


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether decay=weights decays this parameter: a weight matrix / kernel (ndim >= 2), not an embedding of
    positions or a token. Biases and norm scales (ndim 1) are not decayed."""
    return param.ndim >= 2 and not _NO_DECAY.search(name.rsplit(".", 1)[-1])


def param_groups(named_params, recipe: Recipe) -> list[dict]:
    """Optimizer parameter groups of (name, parameter) pairs: one group at recipe.weight_decay (decay=all), or
    the weights at recipe.weight_decay and the rest at 0 (decay=weights); empty groups left out."""
    named = list(named_params)
    if recipe.decay == "all":
        return [{"params": [p for _, p in named], "weight_decay": recipe.weight_decay}]
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": recipe.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def fused_on_cpu(params) -> bool:
    """Whether these parameters are all on the CPU and this PyTorch has fused CPU optimizer kernels (2.4 on).
    There one fused step replaces a loop of small ops per tensor: on the default model 2.4 ms against 5.7 for
    Adam, 1.2 against 3.7 for SGD (2-core AMD EPYC). The weights differ from the loop's in the last digits (after 30
    steps Adam's within 3e-8, SGD's within 5e-7), which a whole training carries into other numbers per seed."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # an older PyTorch: its loop
        return False
    return "cpu" in _get_fused_kernels_supported_devices() and all(p.device.type == "cpu" for p in params)


def make_optimizer(named_params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over (name, parameter) pairs, weight decay per `param_groups`; fused on the CPU
    (`fused_on_cpu`). On CUDA PyTorch's own default (foreach) stays."""
    groups = param_groups(named_params, recipe)
    fused = fused_on_cpu(p for g in groups for p in g["params"]) or None
    build = {"sgd": lambda: torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True, fused=fused),
             "adam": lambda: torch.optim.Adam(groups, lr=recipe.lr, fused=fused),
             "adamw": lambda: torch.optim.AdamW(groups, lr=recipe.lr, fused=fused)}
    assert set(build) == set(C.OPTIMIZERS)  # the config's list, checked when the config is read
    if recipe.optimizer not in build:  # a Recipe built by code, not read from a config
        raise ValueError(f"optimizer {recipe.optimizer!r} is not one of {', '.join(C.OPTIMIZERS)}")
    return build[recipe.optimizer]()


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    if recipe.schedule == "onecycle" and total_steps * 0.25 >= 2:  # OneCycleLR needs two warm-up steps
        # 25% warm-up then cosine decay, stepped per batch; without it accuracy swings between epochs
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.25)
    if recipe.schedule == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    return None


def warmup_cosine(step: int, total: int, warmup: float = 0.05, floor: float = 0.1) -> float:
    """The learning rate's factor at `step` of `total`: linear warm-up over `warmup` of the steps (at least one),
    then cosine decay from 1 to `floor` at the last step."""
    warm = max(1, round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    done = min(1.0, (step - warm) / max(1, total - 1 - warm))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))


def batches(n: int, batch_size: int, generator: torch.Generator | None, min_last: int = 2) -> list[torch.Tensor]:
    """Index batches over range(n), shuffled when a generator is given. A trailing batch smaller than
    `min_last` joins the previous batch (BatchNorm cannot normalise a single sample in training mode; with
    W processes each needs two: min_last = 2W)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    out = list(order.split(batch_size))
    if len(out) > 1 and len(out[-1]) < min_last:
        out[-2:] = [torch.cat(out[-2:])]
    return out


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one pass over n samples, as `fit` batches them (a lone trailing sample joins the last batch)."""
    return len(batches(n, batch_size, None, 2 * dist.world().size))


def set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def mixup(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """MixUp's inputs: lam * x + (1 - lam) * x[perm] (each sample mixed with the one `perm` pairs it with)."""
    return lam * x + (1.0 - lam) * x[perm]


def mixup_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """MixUp's loss: lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm]), batch means, in nats."""
    ce = lambda labels: F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return lam * ce(y) + (1.0 - lam) * ce(y[perm])


@dataclass
class Batch:
    """One training step's inputs, for objectives that need more than (logits, labels)."""

    x: torch.Tensor  # normalised images, as the model saw them
    y: torch.Tensor  # labels (the data set's, or `fit`'s `labels` override)
    rows: torch.Tensor  # indices into the train set, on the device
    epoch: int  # 0-based


Objective = Callable[[torch.Tensor, Batch], torch.Tensor]  # (logits in fp32, batch) -> scalar loss


class Cycle:
    """Endless shuffled batches over `index` (a second stream drawn beside the main one, e.g. forget samples)."""

    def __init__(self, index: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.index, self.batch_size, self.generator = index, batch_size, generator
        self._queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self._queue:
            self._queue = [self.index[i] for i in batches(len(self.index), self.batch_size, self.generator)]
        return self._queue.pop(0)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageData, index: torch.Tensor, ctx: Context, batch_size: int = 256):
    """Recompute every BatchNorm's running statistics over the samples `index` (one pass, no gradient).

    After pruning and adapter training, statistics tracked during training lag the changing network;
    the eval-mode model then sees wrong normalisation (measured: 99.8% retain accuracy in train mode,
    10.8% in eval mode). The running mean becomes the exact mean over `index`; the running variance the
    sample-weighted mean of the per-batch (unbiased) variances, as BatchNorm tracks it.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    model.eval()  # the network as evaluated (adapter dropout off): only BatchNorm collects statistics
    for m in bns:
        m.reset_running_stats()
        m.train()
    seen = 0
    for idx in batches(len(index), batch_size, None):
        seen += len(idx)
        for m in bns:
            m.momentum = len(idx) / seen  # running <- running + (n_b / n_seen) (batch - running): a weighted mean
        rows = index[idx].to(data.x_train.device)
        with ctx.autocast():
            model(ctx.model_input(data, data.x_train[rows]))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)


def fit(
    model: nn.Module,
    data: ImageData,
    index: torch.Tensor,
    recipe: Recipe,
    ctx: Context,
    desc: str = "train",
    labels: torch.Tensor | None = None,
    objective: Objective | None = None,
    paired: tuple[torch.Tensor, int] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    bn_index: torch.Tensor | None = None,
    schedule=None,
) -> list[dict]:
    """Train the parameters of `model` that require grad on train samples `index`.

    `labels` overrides the data set's labels (same length as the train set). `objective` replaces
    cross-entropy. `paired=(index2, batch_size2)` appends to every batch `batch_size2` samples cycled from
    `index2` (one forward over both; the epoch still ends when `index` is used up). `optimizer` continues an
    existing optimizer (its state kept) instead of making one from the recipe, and `schedule` continues a
    learning-rate schedule spanning several calls (stepped once per batch; give the recipe schedule=constant).
    BatchNorm statistics are refitted / recalibrated (recipe.bn) over `bn_index` (default `index`; methods that
    train on forget samples pass the retain set). Returns per-epoch
    {"epoch", "loss", "acc", "seconds"}, loss and accuracy measured on the training batches.
    """
    loop = TrainingLoop(model, data, recipe, ctx, labels, objective, optimizer)
    n_batches = steps_per_epoch(len(index), recipe.batch_size)
    loop.schedule = schedule or make_schedule(loop.optimizer, recipe, recipe.epochs * n_batches)
    loop.pair = Cycle(paired[0], paired[1], loop.generator) if paired is not None else None
    bn_index = index if bn_index is None else bn_index
    if recipe.bn == "refit":
        recalibrate_bn(model, data, bn_index, ctx)
    history = []
    loop.bar = tqdm(total=recipe.epochs * n_batches, desc=desc, disable=None if ctx.progress else True, leave=False, unit="step")
    for epoch in range(recipe.epochs):
        history.append(loop.epoch(index, epoch, desc))
    loop.bar.close()
    if recipe.bn == "recalibrate":
        recalibrate_bn(model, data, bn_index, ctx)
    model.eval()
    return history


class TrainingLoop:
    """The state of one `fit` call: optimizer, schedule, objective, random streams, progress bar."""

    def __init__(self, model, data, recipe, ctx, labels, objective, optimizer):
        self.model, self.data, self.recipe, self.ctx = model, data, recipe, ctx
        self.optimizer = optimizer or make_optimizer([(n, p) for n, p in model.named_parameters() if p.requires_grad], recipe)
        self.world = w = dist.world()
        self.generator = torch.Generator().manual_seed(ctx.seed)  # the same on every rank: the same global batches
        # augmentation draws per local sample: its own stream per rank keeps `generator` in step across ranks
        self.aug_generator = torch.Generator().manual_seed(ctx.seed * 7919 + w.rank + 1) if w.active else self.generator
        self.min_last = 2 * w.size
        self.y_all = (data.y_train if labels is None else labels).to(ctx.device)
        if objective is not None and recipe.mixup > 0:
            raise ValueError(f"MixUp (mixup={recipe.mixup}) mixes cross-entropy only; a custom objective needs mixup=0")
        loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        plain = objective is None  # cross-entropy on the data set's labels: a step a CUDA graph may record
        self.text = is_text(data)  # token rows: the causal-LM step
        if self.text:
            objective, plain = objective or answer_loss, False
        self.objective = objective or (lambda logits, batch: loss_fn(logits, batch.y))
        # MixUp's lambda: one draw per global batch from a stream seeded by the run's seed, the same on every rank
        self.mix_rng = np.random.default_rng([ctx.seed, 0x6D6978]) if recipe.mixup > 0 else None
        # text: the LM head only at the answer positions the loss reads (a third of the padded positions)
        net = dist.wrap(AnswerLogits(model) if self.text else model, ctx.device)  # DDP across processes, or itself
        self.forward = torch.compile(net) if ctx.compile else net  # compiled graph shares the model's parameters
        self.schedule = self.pair = self.bar = None
        self.graphed = None
        if self.graph_ok(plain=plain):
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            self.graphed = GraphedStep(lambda: self.forward_backward(self.graphed.rows, 0), recipe.batch_size,
                                       ctx.device, params)

    def graph_ok(self, plain: bool) -> bool:
        """Whether full batches can replay a CUDA graph (see `graphs`): fixed work per step, one process."""
        kind = self.data.augment if self.recipe.augment else "none"
        return (bool(self.ctx.graphs) and self.ctx.device.type == "cuda" and plain and self.mix_rng is None
                and kind == "none" and not self.world.active and not self.ctx.compile
                and self.data.x_train.device.type == "cuda")

    def train_mode(self) -> None:
        self.model.train()
        if self.recipe.bn in ("frozen", "refit"):
            set_bn_eval(self.model)

    def epoch(self, index: torch.Tensor, epoch: int, desc: str) -> dict:
        """One pass over `index`; the epoch's loss, accuracy, seconds (+ monitor and shard checks)."""
        start = time.perf_counter()
        self.train_mode()
        # accumulated on the device: a .item() per step would force a GPU sync every step
        totals = torch.zeros(2, device=self.ctx.device)  # loss sum, correct
        seen = 0
        order = [dist.shard(index[idx]) for idx in batches(len(index), self.recipe.batch_size, self.generator, self.min_last)]
        local_rows = order if epoch == 0 and self.world.active else []
        if self.data.x_train.device.type == "cuda" and self.pair is None:
            # the epoch's rows go to the GPU in one copy: a copy from host memory per step would make the host
            # wait for the GPU to finish the previous step before launching the next
            order = list(torch.cat(order).to(self.data.x_train.device).split([len(r) for r in order]))
        for rows in order:
            if self.pair is not None:
                rows = torch.cat([rows, dist.shard(self.pair.next())])
            totals += self.step(rows, epoch)
            seen += len(rows)
            self.bar.update()
        if self.world.active:  # the epoch's figures over every rank's samples
            totals = torch.cat([totals, torch.tensor([float(seen)], device=self.ctx.device)])
            torch.distributed.all_reduce(totals)
            seen = int(totals[2].item())
        loss, acc = totals[0].item() / seen, 100.0 * totals[1].item() / seen
        if not math.isfinite(loss):
            raise FloatingPointError(f"{desc}: the training loss became {loss} in epoch {epoch + 1}")
        record = {"epoch": epoch + 1, "loss": loss, "acc": acc, "seconds": time.perf_counter() - start}
        self.ctx.meter.loop_seconds += record["seconds"]
        if self.ctx.monitor is not None:
            with self.ctx.meter.paused():
                record.update(self.ctx.monitor(self.model))
        if local_rows:  # checked once per call: the ranks' samples are disjoint and cover the index
            record.update(dist.shard_report(torch.cat(local_rows), len(index), self.ctx.device))
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}")
        return record

    def mix_draw(self, n: int) -> tuple[float, torch.Tensor]:
        """MixUp's draws for a batch of n: lambda ~ Beta(alpha, alpha) (one per global batch, the same on every
        rank) and each sample's partner, the one before it in the shuffled batch (torchvision's MixUp, which the
        authors used, mixes the batch with itself rolled by one: no sample is paired with itself)."""
        lam = float(self.mix_rng.beta(self.recipe.mixup, self.recipe.mixup))
        return lam, torch.arange(n, device=self.ctx.device).roll(1)

    def step(self, rows: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimizer step on train samples `rows`; returns (loss sum, correct) of the batch, on the device."""
        if self.graphed is not None and self.pair is None and len(rows) == self.recipe.batch_size:
            figures = self.graphed(rows)
        else:
            figures = self.forward_backward(rows, epoch)
        self.optimizer.step()
        self.ctx.meter.end_step(self.model, self.optimizer)
        if self.schedule is not None:
            self.schedule.step()
        return figures

    def forward_backward(self, rows: torch.Tensor, epoch: int) -> torch.Tensor:
        """Gradients of the batch `rows` in .grad; returns its (loss sum, correct), on the device."""
        ctx, data = self.ctx, self.data
        if self.text:
            return self.text_forward_backward(rows, epoch)
        rows = rows.to(data.x_train.device)
        kind = data.augment if self.recipe.augment else "none"
        x = augment(data.x_train[rows].to(ctx.device, non_blocking=True), kind, self.aug_generator)
        x = data.normalise(x)
        rows = rows.to(ctx.device)
        y = self.y_all[rows]
        if self.mix_rng is not None:  # the (shuffled) batch mixed with itself, each sample with another
            lam, perm = self.mix_draw(len(y))
            x = mixup(x, lam, perm)
        x = ctx.prepare_input(x)
        with ctx.meter.step():
            with ctx.autocast():  # the forward only: backward runs in the dtypes autocast chose
                logits = self.forward(x)
            if self.mix_rng is None:
                loss = self.objective(logits.float(), Batch(x, y, rows, epoch))
            else:
                loss = mixup_cross_entropy(logits.float(), y, perm, lam, self.recipe.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        hit = logits.detach().argmax(1) == y
        if self.mix_rng is not None:  # a mixed sample counts lam right for y and 1 - lam for its partner's label
            hit = lam * hit.float() + (1.0 - lam) * (logits.detach().argmax(1) == y[perm]).float()
        return torch.stack([loss.detach() * len(y), hit.sum().float()])

    def text_forward_backward(self, rows: torch.Tensor, epoch: int) -> torch.Tensor:
        """A text batch: the causal-LM loss on its answer tokens (`answer_loss`, or the objective given, which gets
        the token logits and `Batch(ids, labels, rows, epoch)`); returns (loss x rows, the rows' summed share of
        answer tokens predicted right)."""
        ctx = self.ctx
        rows = rows.to(self.data.x_train.device)
        ids, labels = self.data.batch(rows)
        with ctx.meter.step():
            with ctx.autocast():
                logits = self.forward(ids, labels[:, 1:] != -100)
            loss = self.objective(logits.float(), Batch(ids, labels, rows, epoch))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if self.recipe.clip > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.recipe.clip)
        return torch.stack([loss.detach() * len(rows), token_accuracy(logits.detach(), labels).sum()])


class AnswerLogits(nn.Module):
    """A causal LM's logits at the answer positions only: `forward(ids, keep)` runs the decoder over the (B, L)
    token ids and the output projection over the hidden states at positions 0..L-2 where `keep` (B, L-1) is true,
    each predicting the token after it; (K, V), the batch's answer tokens in row-major order. The projection
    (2,048 x 128 on llama-tiny, 42% of a step's FLOPs at every position) then runs on a third of the positions."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.get_decoder()(input_ids=ids).last_hidden_state
        return self.lm.get_output_embeddings()(hidden[:, :-1][keep])


def answer_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the answer tokens AnswerLogits predicts, in its order; the row of each): labels at positions 1..L-1 that
    are not -100, a causal LM's targets for the logits at 0..L-2."""
    following = labels[:, 1:]
    keep = following != -100
    return following[keep], keep.nonzero()[:, 0]


def answer_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy (nats) of the answer tokens (`AnswerLogits`' rows), averaged over the batch's answer tokens:
    the loss a causal LM trains with on question-answer pairs (Hugging Face's, with prompt tokens masked)."""
    return F.cross_entropy(logits, answer_targets(batch.y)[0])


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per row of the batch, the NLL of its answer tokens: their mean (nats per token) or, with reduction='sum',
    their sum (nats per answer: the log-likelihood of the whole answer, which NPO's ratio to the reference reads,
    as open-unlearning's `compute_batch_nll` sums it)."""
    targets, rows = answer_targets(labels)
    token = F.cross_entropy(logits, targets, reduction="none")
    sums = torch.zeros(len(labels), dtype=token.dtype, device=token.device).index_add(0, rows, token)
    if reduction == "sum":
        return sums
    return sums / torch.bincount(rows, minlength=len(labels)).clamp(min=1)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the share of its answer tokens whose argmax is the label."""
    targets, rows = answer_targets(labels)
    hits = torch.zeros(len(labels), device=logits.device).index_add(0, rows, (logits.argmax(-1) == targets).float())
    return hits / torch.bincount(rows, minlength=len(labels)).clamp(min=1)

"""Opening an experiment: what every command (run, train, unlearn, evaluate) starts from.

`open_experiment(cfg)` resolves the config (checks every name, fills the model preset's defaults and every used
method's settings), makes the context (threads, device, processes, progress bars), loads the data set and splits it
by the deletion request. `train_original` then gives the original model: trained from scratch on the whole train
set, reloaded from the model cache, or read from `model.init`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import config as C
from ..data import (
    DATASETS,
    ImageData,
    Splits,
    load_dataset,
)
from ..data import request_splits as data_request_splits
from ..data.catalog import is_text
from ..engine import dist
from ..engine.context import Context, native_bf16, pick_device, seed_everything, set_threads
from ..engine.loop import fit, recipe_from
from ..engine.meter import CostMeter
from ..errors import UserError
from ..methods import METHODS, UnlearnTask
from ..methods.variants import base_method, variant_config
from ..models import TIMM_PREFIX, arch_of, check_timm_name, classifier_name, create_model, get_spec, select_layers
from ..models.pruning import removal_roots
from ..store import cache
from ..store.checkpoints import load_weights, read_state_dict
from .resolve import check_out, memory_available, resolve_config
from .validation import Validation, selection_data

__all__ = ["Experiment", "check_model", "make_context", "model_facts", "open_experiment", "prepare", "request_splits",
           "resolve_config", "train_original"]


@dataclass
class Experiment:
    """A resolved config with its context, data set and the request's splits."""

    config: C.ExperimentConfig  # resolved: no `None` left that a preset fills
    ctx: Context
    data: ImageData  # on the GPU (uint8) when the device is one
    splits: Splits  # of the whole request (for a sequence: of every request together)
    validation: Validation | None = None  # with eval.select=best: the validation view (of the same train rows)

    def for_seed(self, seed: int) -> Experiment:
        """The same experiment at another seed (the config's and the context's)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, seed=seed),
                                   ctx=dataclasses.replace(self.ctx, seed=seed))

    def task(self) -> UnlearnTask:
        """What a method works on: the data, the splits and the config."""
        return UnlearnTask(self.data, self.splits, self.config)


def open_experiment(cfg: C.ExperimentConfig, progress: bool = True, out: str | Path | None = None) -> Experiment:
    """Resolve `cfg`, check `out` (a directory to write, if given), make the context, load and split the data,
    check the model against it. Every user error in the settings is raised here, before anything is trained or
    written."""
    cfg = resolve_config(cfg)
    if out is not None:
        check_out(cfg, out)
    if cfg.model.name.startswith(TIMM_PREFIX):
        check_timm_name(cfg.model.name[len(TIMM_PREFIX):])
    ctx = make_context(cfg, progress)
    if (shape := static_shape(cfg)) is not None:  # before the data loads, from the data set's published facts
        check_model(cfg, shape, ctx.device)
    data, splits, validation = prepare_all(cfg, ctx.device)
    check_model(cfg, data, ctx.device)  # the data as loaded (an image folder's channels are known only now)
    return Experiment(cfg, ctx, data, splits, validation)


@dataclass(frozen=True)
class DataShape:
    """What building the model needs of a data set (ImageData has the same attributes), and its size."""

    num_classes: int
    in_chans: int
    image_size: int
    samples: int  # train + test images


def static_shape(cfg: C.ExperimentConfig) -> DataShape | None:
    """The data set's shape from its catalog facts (None where they are known only once it is loaded)."""
    spec = DATASETS.get(cfg.data.name)
    sizes = spec.sizes(cfg.data.test_fraction)
    if spec.classes is None or spec.channels is None or sizes is None:
        return None
    return DataShape(len(spec.classes), spec.channels, spec.image_size(cfg.data.image_size), sum(sizes))


def check_model(cfg: C.ExperimentConfig, data: ImageData | DataShape, device: torch.device | None = None) -> None:
    """What needs the model built (on the meta device: no memory, no initialisation): its architecture fits the
    data, each method's (and variant's) pruning and LoRA targets select layers, the pruning amount prunes some but
    not all channels of each, the LoRA rank fits each adapted layer, and a run fits the memory of `device`."""
    with torch.device("meta"):
        model = create_model(dataclasses.replace(cfg.model, pretrained=False), data.num_classes, data.in_chans,
                             data.image_size)
    family, depth = get_spec(cfg.model.name).family, arch_of(cfg.model).get("depth")
    for name in cfg.methods:
        settings = variant_config(cfg, name) if name in cfg.variants else cfg
        uses = METHODS.get(base_method(cfg, name)).uses
        key = f"variants.{name}." if name in cfg.variants else ""
        widths = {}
        if "pruning" in uses:
            pruned = select_layers(model, family, settings.pruning.targets, "prune", depth)
            rows = settings.pruning.forget_head_rows
            if rows != "l2" and classifier_name(model) not in pruned:
                raise UserError(f"pruning.forget_head_rows={rows} needs the head among the pruned layers, but "
                                f"pruning.targets={settings.pruning.targets} does not prune it")
            widths = check_pruning(model, pruned, settings.pruning, f"{key}pruning.amount")
        if "lora" in uses:
            adapted = select_layers(model, family, settings.lora.targets, "lora", depth)
            check_rank(model, adapted, settings.lora.r, f"{key}lora.r", widths)
    check_memory(cfg, model, data, device)


def prunable_width(model: nn.Module, name: str, mode: str) -> int:
    """The channels among which the pruning rule picks `amount` of a layer: its output rows (mode=mask); with
    mode=remove those of the group Torch-Pruning ranks, which for an attention qkv layer is one head's width
    (each head loses the same channels: qkv rows / (3 x heads))."""
    modules = dict(model.named_modules())
    module, parent = modules[name], modules.get(name.rpartition(".")[0])
    width = _out_width(module)
    if mode == "remove" and getattr(parent, "qkv", None) is module and hasattr(parent, "num_heads"):
        return width // (3 * parent.num_heads)
    return width


def pruned_count(width: int, amount: float, mode: str) -> int:
    """Channels of `width` the rule prunes: round(amount x width) as torch.nn.utils.prune.ln_structured counts
    them (mode=mask), or width - int(width x (1 - amount)) as Torch-Pruning's MetaPruner does (mode=remove)."""
    return round(amount * width) if mode == "mask" else width - int(width * (1 - amount))


def check_pruning(model: nn.Module, names: list[str], pruning: C.PruningConfig, key: str) -> dict[str, int]:
    """Refuse an amount that prunes none or all of the channels of some layer (the rule then does nothing there:
    ln_structured zeroes the whole layer, Torch-Pruning skips the group); returns each removal root's output
    width after mode=remove ({} for mode=mask, whose shapes stay)."""
    mode = pruning.mode
    layers = removal_roots(model, names, classifier_name(model)) if mode == "remove" else names
    widths = {name: prunable_width(model, name, mode) for name in layers}
    for name, width in widths.items():
        k = pruned_count(width, pruning.amount, mode)
        if 0 < k < width:
            continue
        lo = max(_amount_bound(w, mode, smallest=True) for w in set(widths.values()))
        hi = min(_amount_bound(w, mode, smallest=False) for w in set(widths.values()))
        what = "none" if k == 0 else "all"
        raise UserError(f"{key}={pruning.amount} prunes {what} of the {width} channels of layer {name} "
                        f"(pruning.mode={mode}); amounts from {math.ceil(lo * 1e4) / 1e4} to {math.floor(hi * 1e4) / 1e4} "
                        "prune some but not all channels of every targeted layer")
    if mode == "mask":
        return {}
    modules = dict(model.named_modules())  # after removal: each group (a head, or the whole layer) loses k channels
    return {name: _out_width(modules[name]) // width * (width - pruned_count(width, pruning.amount, mode))
            for name, width in widths.items()}


def _amount_bound(width: int, mode: str, smallest: bool) -> float:
    """The smallest amount that prunes a channel of `width`, or the largest that leaves one (bisection: the count
    grows with the amount)."""
    lo, hi = 0.0, 1.0  # smallest: pruned_count(lo) == 0 < pruned_count(hi); largest: count(lo) < width <= count(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        count = pruned_count(width, mid, mode)
        if (count >= 1) if smallest else (count >= width):
            hi = mid
        else:
            lo = mid
    return hi if smallest else lo


def _out_width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def check_rank(model: nn.Module, names: list[str], r: int, key: str, widths: dict[str, int]) -> None:
    """Refuse a LoRA rank larger than every adapted layer: than the outputs and the inputs of each (a Linear's
    in_features; a Conv2d's in_channels x kernel area / groups, what peft's A maps to r channels), where both
    factors of B @ A outgrow the layer. A rank that exceeds only some layers is allowed (the update of those is then
    full rank): the tests' width-4 ResNets run the preset's r=8, and the paper's ViT (the authors' code) r=16 on its
    10-class head alone, so a rule on min(outputs, inputs) would refuse the reproduction.
    `widths`: output widths after pruning.mode=remove (input widths are taken before it)."""
    modules, sides = dict(model.named_modules()), {}
    for name in names:
        module = modules[name]
        if isinstance(module, nn.Conv2d):
            inputs = module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
            sides[name] = (widths.get(name, module.out_channels), inputs)
        else:
            sides[name] = (widths.get(name, module.out_features), module.in_features)
    widest = max(sides, key=lambda n: max(sides[n]))
    (out, inputs), largest = sides[widest], max(sides[widest])
    if r > largest:
        after = " after pruning.mode=remove" if widest in widths else ""
        where = f"layer {widest}" if len(sides) == 1 else f"every adapted layer; the widest, {widest}"
        raise UserError(f"{key}={r} is larger than {where} ({out} outputs{after}, {inputs} inputs); use "
                        f"{key}={largest} or less ({min(out, inputs)} already makes its update full rank)")


# float32 bytes of training state per parameter: the weight, its gradient and Adam's two moments, plus two more
# copies of the weights a method keeps beside the one it trains (the original; a frozen teacher or reference)
STATE_BYTES_PER_PARAM = 4 * 6
# bytes autograd saves for backward per float32 byte of the leaf layers' outputs (`activation_elements` x 4): the
# storages saved_tensors_hooks sees in a training step on the CPU (meter.py's count; the weights left out), over this
# estimate, were 0.84 (resnet18-tiny, 12 px), 0.78 (resnet50-tiny, 32 px), 0.50 (vit-tiny, 12 px); rounded up for
# the gradients of the activations that backward holds at once and the allocator's slack
# (tests/test_early_checks.py keeps each measured ratio under it)
ACTIVATION_FACTOR = 1.5


def check_memory(cfg: C.ExperimentConfig, model: nn.Module, data: ImageData | DataShape,
                 device: torch.device | None) -> None:
    """Refuse a run whose estimate (`estimate_memory`) exceeds the GPU's memory, or the memory the CPU has left."""
    parts = estimate_memory(cfg, model, data)
    need = sum(parts.values())
    if device is not None and device.type == "cuda":
        available, where = torch.cuda.get_device_properties(device).total_memory, f"{device} has"
    else:
        available, where = memory_available(), "are available"
    if available is not None and need > available:
        detail = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in parts.items())
        raise UserError(f"this run needs about {need / 1e9:.3g} GB of memory ({detail} GB), more than the "
                        f"{available / 1e9:.3g} GB that {where}; lower model.width, data.image_size or the batch sizes")


def estimate_memory(cfg: C.ExperimentConfig, model: nn.Module, data: ImageData | DataShape) -> dict[str, int]:
    """Bytes a run needs at its largest training step, by part: the model's training state, the activations of
    the largest batch (any recipe's batch_size), and the data set (uint8, kept whole in memory or on the GPU)."""
    params = sum(p.numel() for p in model.parameters())
    batches = [cfg.train.batch_size, cfg.unlearn.batch_size,
               *(h["batch_size"] for h in cfg.hparams.values() if isinstance(h, dict) and h.get("batch_size"))]
    samples = data.samples if isinstance(data, DataShape) else len(data.y_train) + len(data.y_test)
    text = is_text(data)
    per_sample = data.image_size * 8 * 2 if text else data.in_chans * data.image_size**2  # text: int64 ids, labels
    return {"model": params * STATE_BYTES_PER_PARAM,
            "activations": int(max(batches) * activation_elements(model, data) * 4 * ACTIVATION_FACTOR),
            "data": samples * per_sample}


def activation_elements(model: nn.Module, data: ImageData | DataShape) -> int:
    """Elements of every leaf module's output in a forward pass of one image (on the meta device: nothing computed)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += sum(t.numel() for t in (output if isinstance(output, tuple) else (output,)) if isinstance(t, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    model.eval()  # BatchNorm in train mode refuses one image of 1x1 pixels; the output shapes are the same
    try:
        with torch.no_grad():
            if is_text(data):  # one row of the longest length, in tokens
                model(input_ids=torch.zeros(1, data.image_size, dtype=torch.long, device="meta"))
            else:
                model(torch.zeros(1, data.in_chans, data.image_size, data.image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def make_context(cfg: C.ExperimentConfig, progress: bool) -> Context:
    """Threads, device (each process its own GPU under torchrun) and the process group; progress bars on
    rank 0 only."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"device is {cfg.device}, but this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                        f"(cuda:0..cuda:{count - 1}); use one of them, or device=auto")
    w = dist.world()
    if w.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", w.local_rank)
    dist.init(device.type)
    progress = progress and w.main
    if cfg.cpu_bf16 and device.type == "cpu" and not native_bf16():
        raise UserError("cpu_bf16=true needs a CPU that computes bf16 natively (AVX-512 BF16 or AMX), and this one "
                        "does not (bf16 would be emulated, slower than fp32); leave cpu_bf16=false")
    return Context(device, cfg.seed, progress, amp=cfg.amp, channels_last=cfg.channels_last, compile=cfg.compile,
                   graphs=cfg.cuda_graphs, cpu_bf16=cfg.cpu_bf16, small_maps=cfg.small_map_convs)


def prepare(cfg: C.ExperimentConfig, device: torch.device | None = None) -> tuple[ImageData, Splits]:
    """The data set (moved whole to `device`, as uint8, when it is a GPU) and the forget/retain/test splits."""
    return prepare_all(cfg, device)[:2]


def prepare_all(cfg: C.ExperimentConfig, device: torch.device | None = None
                ) -> tuple[ImageData, Splits, Validation | None]:
    """`prepare`, plus the validation view with eval.select=best; the data set is then its train set without the
    validation samples (and the real test set), the same train rows as the view's."""
    data = load_dataset(cfg.data)
    validation = None
    if cfg.eval.select == "best":
        data, splits, validation = selection_data(cfg, data)
    else:
        splits = request_splits(cfg.forget, data)
    if device is not None and device.type == "cuda":
        data = data.to(device)
        if validation is not None:
            validation.data = validation.data.to(device)
    return data, splits, validation


def request_splits(forget: C.ForgetConfig, data: ImageData) -> Splits:
    """The splits of a deletion request on `data` (data/splits.py reads the request; on text it names authors)."""
    return data_request_splits(forget, data.y_train, data.y_test, data.classes, authors=is_text(data))


def model_facts(data: ImageData, channels_removed: bool = False) -> dict:
    """What rebuilding a saved model needs besides its config: class count, input shape, removed channels."""
    return {"num_classes": data.num_classes, "in_chans": data.in_chans, "image_size": data.image_size,
            "channels_removed": channels_removed}


def train_original(cfg: C.ExperimentConfig, data: ImageData, ctx: Context) -> tuple[nn.Module, dict]:
    """Train the original model on the whole train set (or load `model.init`); returns it and its cost record."""
    seed_everything(cfg.seed)
    model = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    if cfg.model.init:
        load_weights(model, read_state_dict(cfg.model.init), cfg.model.init)
        record = {"time_s": 0.0, "loop_s": 0.0, "epochs": 0, "peak_memory_mb": 0.0, "loaded_from": cfg.model.init}
        return ctx.prepare_model(model).eval(), record
    model = ctx.prepare_model(model)
    everything = torch.arange(len(data.y_train))
    key, described = cache.model_key("original", cfg, cfg.seed, data.source_rows(everything), ctx, data)
    if cfg.cache and (record := cache.load("original", key, model)) is not None:
        return model.eval(), record
    ctx.meter = CostMeter(ctx.device)
    with ctx.meter.measure():
        history = fit(model, data, everything, recipe_from(cfg.train), ctx, desc="original")
    record = {"time_s": ctx.meter.seconds, "loop_s": ctx.meter.loop_seconds, "epochs": cfg.train.epochs,
              "peak_memory_mb": ctx.meter.peak_mb}
    if cfg.cache:
        cache.store("original", key, described, model, record, data)
    return model, {**record, "history": history}

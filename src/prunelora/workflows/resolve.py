"""Resolving a config, without PyTorch: every name checked against the catalogs (model, data set, methods,
variants and their settings, evidence metrics) and every `None` a preset fills filled in. The command line calls it
before it imports PyTorch, so that a mistake in the settings is reported at once; `experiment.open_experiment`
then checks what needs the data set or the model built. The same goes for a checkpoint's config
(`checkpoint_config`) and for where a command writes (`check_out`)."""

from __future__ import annotations

import copy
from pathlib import Path

from .. import config as C
from ..data.catalog import DATASETS, class_names, default_forget
from ..data.splits import author_indices, class_index, parse_indices
from ..errors import UserError
from ..methods.catalog import METHODS
from ..methods.variants import base_method, resolve_methods, variant_config
from ..metrics.catalog import EVIDENCE
from ..models.presets import TEXT_MODEL, arch_of, get_spec
from ..store.checkpoints import read_config
from ..store.files import check_out_dir, same_path

ENSEMBLE_METRICS = ("forgetting_quality", "klom")  # evidence that unlearns originals of other seeds: needs a method


def resolve_config(cfg: C.ExperimentConfig) -> C.ExperimentConfig:
    """Check names and fill every `None` with the model preset's value; the result is what runs."""
    cfg = copy.deepcopy(cfg)
    text = text_data(cfg)
    if text:
        resolve_text(cfg)
    spec = get_spec(cfg.model.name)
    arch_of(cfg.model)  # architecture keys the model takes
    resolve_methods(cfg)
    if text:
        check_text_methods(cfg)
    elif cfg.forget.kind == "classes" and cfg.forget.classes is None and cfg.forget.sequence is None:
        cfg.forget.classes = default_forget(cfg.data.name)
    for name in cfg.eval.evidence:
        EVIDENCE.get(name)
    ensembles = [name for name in cfg.eval.evidence if name in ENSEMBLE_METRICS]
    if ensembles and cfg.forget.sequence is not None:
        raise UserError(f"eval.evidence={ensembles[0]} scores one request, not a sequence; drop it from eval.evidence "
                        "or run each request of forget.sequence on its own")
    t, d = cfg.train, spec.train_defaults
    t.epochs, t.optimizer = t.epochs or d.epochs, t.optimizer or d.optimizer
    t.lr = t.lr if t.lr is not None else d.lr
    t.weight_decay = t.weight_decay if t.weight_decay is not None else d.weight_decay
    t.batch_size, t.schedule = t.batch_size or d.batch_size, t.schedule or d.schedule
    t.clip = t.clip if t.clip is not None else d.clip
    cfg.lora.r = cfg.lora.r or spec.lora_r
    cfg.lora.alpha = cfg.lora.alpha if cfg.lora.alpha is not None else spec.lora_alpha
    check_request(cfg)
    check_pruning_amount(cfg)
    check_data_memory(cfg)
    return cfg


# the image defaults a text run replaces: the model, the evidence and the relearning attack's steps and lr
IMAGE_MODEL, IMAGE_EVIDENCE = C.ModelConfig().name, C.EvalConfig().evidence
IMAGE_RELEARN_STEPS, IMAGE_RELEARN_LR = C.EvalConfig().relearn_steps, C.EvalConfig().relearn_lr
TEXT_EVIDENCE = ["relearn"]  # a text run's default evidence
# a text run's relearning attack (metrics/text_relearn.py) on llama-tiny, measured on the default run's six models
# (2-core EPYC): 16 full-batch steps of 40 rows, about 30 ms each, keep its cost under 1 s a model with the checks;
# lr 1e-4, as the image default 1e-3 overwrites the held-out answers (the original's held-out forget ROUGE-L falls
# from 1.00 to 0.86 in 20 steps): it would score interference, not relearning (docs/metrics.md)
TEXT_RELEARN_STEPS, TEXT_RELEARN_LR = 16, 1e-4
TEXT_FORGET_FRACTION = 0.05  # TOFU's forget05: the share of authors a text run forgets by default


def text_data(cfg: C.ExperimentConfig) -> bool:
    """Whether the config's data set is text (its catalog modality)."""
    return DATASETS.get(cfg.data.name).modality == "text"


def text_methods() -> list[str]:
    """The registered methods with a text version (`MethodSpec.modalities`), in registry order."""
    return [m for m in METHODS.names() if "text" in METHODS.get(m).modalities]


def text_evidence() -> list[str]:
    """The registered evidence metrics with a text version (`EvidenceSpec.modalities`), in registry order."""
    return [e for e in EVIDENCE.names() if "text" in EVIDENCE.get(e).modalities]


def resolve_text(cfg: C.ExperimentConfig) -> None:
    """A text data set's defaults and refusals (in place): the text model where model.name is the image default,
    5% of the authors forgotten where no request is given, the text evidence and relearning steps and lr where the
    image defaults are left; an image model, a request of sample indices or a sequence, and image-only evidence
    asked for are one clear error each."""
    if cfg.model.name == IMAGE_MODEL:
        cfg.model.name = TEXT_MODEL
    if cfg.methods == ["all"]:  # every method with a text version
        cfg.methods = text_methods() + list(cfg.variants)
    if get_spec(cfg.model.name).family != "llama":
        raise UserError(f"model {cfg.model.name} is an image model; data.name={cfg.data.name} is text: use "
                        f"model.name={TEXT_MODEL}")
    if cfg.eval.evidence == IMAGE_EVIDENCE:
        cfg.eval.evidence = list(TEXT_EVIDENCE)
    if cfg.eval.relearn_steps == IMAGE_RELEARN_STEPS:
        cfg.eval.relearn_steps = TEXT_RELEARN_STEPS
    if cfg.eval.relearn_lr == IMAGE_RELEARN_LR:
        cfg.eval.relearn_lr = TEXT_RELEARN_LR
    for name in cfg.eval.evidence:
        if "text" not in EVIDENCE.get(name).modalities:
            raise UserError(f"eval.evidence={name} scores images only; a text run takes "
                            f"{', '.join(text_evidence())} (or eval.evidence=[])")
    forget = cfg.forget
    if forget.indices is not None or forget.sequence is not None:
        key = "indices" if forget.indices is not None else "sequence"
        raise UserError(f"forget.{key} is for images; on text, forget authors with forget.classes=[names or "
                        "indices] or a share of them with forget.fraction=0.05")
    if forget.classes is None and forget.fraction is None:
        forget.fraction = TEXT_FORGET_FRACTION
    if cfg.eval.select != "last":
        raise UserError("eval.select=best needs a validation split of images; on text use eval.select=last")
    if cfg.eval.curves:
        raise UserError("eval.curves records forget and retain accuracy of images; on text set eval.curves=false")


def images_only(cfg: C.ExperimentConfig, command: str) -> C.ExperimentConfig:
    """`cfg`, unless its data set is text, which `prunelora <command>` does not take yet (one line, before any work)."""
    if text_data(cfg):
        raise UserError(f"prunelora {command} takes image data sets so far; data.name={cfg.data.name} is text: "
                        f"compare methods on it with prunelora run data.name={cfg.data.name}")
    return cfg


def check_text_methods(cfg: C.ExperimentConfig) -> None:
    """Every method asked of a text run has a text version (`MethodSpec.modalities`), else one line before training."""
    for name in cfg.methods:
        base = base_method(cfg, name)
        if "text" not in METHODS.get(base).modalities:
            raise UserError(f"method {name} has no text version yet; on data.name={cfg.data.name} run "
                            f"{', '.join(text_methods())}")


def check_request(cfg: C.ExperimentConfig) -> None:
    """The deletion request against the data set's facts (its classes, its train size), before anything is loaded:
    each forget class exists, no class is named twice (a name and its index included), one class at least is
    retained, and a forget.indices file holds distinct indices of the train set. What is not known yet (an image
    folder's size) is checked again once the data is loaded (`experiment.request_splits`)."""
    forget = cfg.forget
    if text_data(cfg):  # the authors are generated (a fraction of a second) only when the request names some
        if forget.classes is not None:
            author_indices(forget.classes, class_names(cfg.data))
        return
    classes = class_names(cfg.data)
    if forget.kind == "classes" and classes is not None:
        key = "forget.sequence" if forget.sequence is not None else "forget.classes"
        named: dict[int, int | str] = {}
        for item in [c for r in forget.sequence for c in r] if forget.sequence is not None else forget.classes:
            index = class_index(item, classes)
            if index in named:
                raise UserError(f"{key} names class {classes[index]!r} twice ({named[index]!r} and {item!r}); "
                                "name each class once")
            named[index] = item
        if len(named) >= len(classes):
            raise UserError(f"{key} names all {len(classes)} classes, which leaves nothing to retain; forget fewer")
    if forget.indices is not None:
        sizes = DATASETS.get(cfg.data.name).sizes(cfg.data.test_fraction)
        parse_indices(forget.indices, sizes[0] if sizes else None)


def check_pruning_amount(cfg: C.ExperimentConfig) -> None:
    """pruning.amount=0 prunes nothing: a method that prunes would silently be its unpruned twin. Whether an amount
    prunes some but not all channels of every layer needs the layer widths (`experiment.check_model`)."""
    for name in cfg.methods:
        if "pruning" not in METHODS.get(base_method(cfg, name)).uses:
            continue
        amount = (variant_config(cfg, name) if name in cfg.variants else cfg).pruning.amount
        if amount == 0:
            key = f"variants.{name}.pruning.amount" if name in cfg.variants else "pruning.amount"
            raise UserError(f"{key} is 0, which prunes nothing: method {name} needs an amount in (0, 1), e.g. 0.5 "
                            "(without pruning, run finetune or lora)")


# bytes per pixel while a data set loads: the uint8 images kept, plus the float32 copies made of them while they
# are resized (the interpolation's output and its rounding, 2 x 4 bytes) or while the channel statistics are taken
LOAD_BYTES_PER_PIXEL = 9


def check_data_memory(cfg: C.ExperimentConfig, available: int | None = None) -> int | None:
    """Refuse a data set that cannot be loaded into this machine's memory (`available` bytes; default: MemAvailable
    of /proc/meminfo) at data.image_size; returns the estimate in bytes (None: the data set's size is not known)."""
    spec = DATASETS.get(cfg.data.name)
    sizes, side = spec.sizes(cfg.data.test_fraction), spec.image_size(cfg.data.image_size)
    if sizes is None or spec.channels is None or side is None:
        return None
    need = sum(sizes) * spec.channels * side * side * LOAD_BYTES_PER_PIXEL
    available = available if available is not None else memory_available()
    if available is not None and need > available:
        raise UserError(f"data set {cfg.data.name} at data.image_size={side} needs about {need / 1e9:.3g} GB of memory "
                        f"to load ({sum(sizes)} images of {spec.channels}x{side}x{side}), more than the "
                        f"{available / 1e9:.3g} GB available; lower data.image_size")
    return need


def memory_available() -> int | None:
    """Bytes of memory this machine can still give a process (MemAvailable of /proc/meminfo); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def checkpoint_config(checkpoint: str | Path, overrides: list[str] = (), config_file: str | None = None
                      ) -> tuple[C.ExperimentConfig, dict]:
    """(resolved config, extra facts) of a checkpoint with `config_file` and `overrides` applied; they may not change
    model.* or data.*, which the checkpoint fixes. Reads the file's header only."""
    saved, extra = read_config(checkpoint)
    fixed = C.from_dict(C.ExperimentConfig, saved)  # the checkpoint's own settings, newer keys at their defaults
    cfg = resolve_config(C.load_config(config_file, overrides, base=saved))
    for section in ("model", "data"):
        if getattr(cfg, section) != getattr(fixed, section):
            raise UserError(f"the checkpoint fixes the {section} settings; remove the {section}.* overrides")
    return cfg, extra


def check_out(cfg: C.ExperimentConfig, out: str | Path, reads: dict[str, str | Path | None] | None = None) -> None:
    """The folder a command writes (`out`) can be written, and holds no file it reads: `model.init` or the `reads`
    given ({what: path}), in `out` or in the run folders it writes (models/, progress/)."""
    out = Path(out)
    check_out_dir(out)
    reads = {"model.init": cfg.model.init, **(reads or {})}
    for what, path in reads.items():
        if path is not None and any(same_path(Path(path).parent, out / sub) for sub in ("", "models", "progress")):
            raise UserError(f"--out '{out}' holds {what} '{path}', which this command reads and would write over; "
                            "pass another --out")

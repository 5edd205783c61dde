"""A few steps of `fit` on a fixed index, for tests/test_distributed.py; run as a script, alone or under torchrun.

    python tests/_ddp_step.py OUT                                   # one process (or train(OUT) in-process)
    python -m torch.distributed.run --nproc_per_node=2 tests/_ddp_step.py OUT

Trains two small models whose forward has no state that differs between ranks (a ViT: LayerNorm is per
sample and timm's dropout rates are 0; a ResNet with recipe.bn="frozen": BatchNorm in eval mode, its running
statistics the same everywhere), with SGD on batches of even size, so that each of two ranks takes exactly
half of every global batch. Every process writes OUT/<model>.rank<R>.pt (its final parameters and buffers)
and OUT/<model>.rank<R>.json: fit's per-epoch history (with the shard report when distributed) and the batch
size of every training forward this rank's model ran (seen by a hook on the model itself, independent of
the shard report); rank 0 also writes OUT/<model>.initial.pt.

PRUNELORA_TEST_MUTATION breaks the distributed step on purpose, to show that the test notices:
all_rows (every rank trains on the whole batch), overlap (rank r takes rows[r : r + n/2 + 1]),
no_ddp (no gradient exchange: each rank steps on its own half), sum_grads (gradients summed, not averaged).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from prunelora.config import DataConfig, ModelConfig
from prunelora.data import load_dataset
from prunelora.engine import dist
from prunelora.engine import loop as engine
from prunelora.engine.context import Context, seed_everything
from prunelora.models import create_model

# 72 samples in batches of 16: 16, 16, 16, 16, 8 (the trailing 8 >= min_last = 2W stays a batch of its own);
# every batch is even, so two ranks take equal halves and the mean of their two mean gradients is the
# mean gradient of the whole batch. Two epochs: 10 optimizer steps.
INDEX = torch.arange(72)
BATCH = 16
EPOCHS = 2
MODELS = {
    "vit": (ModelConfig(name="vit-tiny", width=32, depth=2, heads=2, patch_size=4), "train"),
    "resnet": (ModelConfig(name="resnet18-tiny", width=4), "frozen"),
}


def _mutate(kind: str) -> None:
    if kind == "all_rows":
        dist.shard = lambda rows: rows
    elif kind == "overlap":
        def overlap(rows):
            w = dist.world()
            return rows[w.rank : w.rank + len(rows) // w.size + 1]
        dist.shard = overlap
    elif kind == "no_ddp":
        dist.wrap = lambda model, device: model
    elif kind == "sum_grads":
        wrap = dist.wrap

        def summing(model, device):
            ddp = wrap(model, device)
            ddp.register_comm_hook(None, lambda _, bucket: torch.distributed.all_reduce(
                bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0]))
            return ddp
        dist.wrap = summing
    elif kind:
        raise SystemExit(f"unknown PRUNELORA_TEST_MUTATION {kind!r}")


def train(out: Path) -> None:
    """Train the models and write what the test reads (one process: also callable in the test's process)."""
    w = dist.world()
    data = load_dataset(DataConfig(name="digits", image_size=8))
    assert data.augment == "none"  # no random transform: the samples are the same however they are split
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    for name, (model_cfg, bn) in MODELS.items():
        seed_everything(0)  # the same initial weights on every rank (DDP would broadcast rank 0's anyway)
        model = create_model(model_cfg, data.num_classes, data.in_chans, data.image_size)
        # nothing random or batch-dependent in the forward, else the halves could not match the whole
        assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()), name
        if bn != "frozen":
            assert not engine.has_batchnorm(model), name
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        sizes: list[int] = []
        model.register_forward_pre_hook(lambda _module, args, seen=sizes: seen.append(len(args[0])))
        recipe = engine.Recipe(epochs=EPOCHS, batch_size=BATCH, optimizer="sgd", lr=0.05, weight_decay=5e-4,
                               schedule="constant", bn=bn)
        history = engine.fit(model, data, INDEX, recipe, ctx, desc=name)
        torch.save(model.state_dict(), out / f"{name}.rank{w.rank}.pt")
        (out / f"{name}.rank{w.rank}.json").write_text(json.dumps({"history": history, "forward_sizes": sizes}))
        if w.main:
            torch.save(initial, out / f"{name}.initial.pt")


def main(out: Path) -> None:
    torch.set_num_threads(1)
    _mutate(os.environ.get("PRUNELORA_TEST_MUTATION", ""))
    dist.init("cpu")
    train(out)
    dist.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

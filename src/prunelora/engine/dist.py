"""Several processes (GPUs or nodes) through torch.distributed and DistributedDataParallel.

Launch with `torchrun` or `accelerate launch` (both set RANK, WORLD_SIZE, LOCAL_RANK): every process runs
the same `prunelora run`. Each global batch is split across the ranks (rank r takes samples r, r + W, ...),
DDP averages the gradients, BatchNorm buffers follow rank 0, inference is sharded and its outputs gathered
so that every metric covers the whole set, and only rank 0 writes files and shows progress. A single process
(no WORLD_SIZE, or 1) never touches torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import nn

from ..world import World, world


def init(device_type: str) -> World:
    """Join the process group once (NCCL on GPUs, gloo on CPUs); a no-op for a single process."""
    w = world()
    if w.active and not torch_dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(w.local_rank)
        torch_dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return w


def shutdown() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def shard(rows: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch: every size-th sample from position rank."""
    w = world()
    return rows[w.rank :: w.size] if w.active else rows


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model for training steps: DDP across ranks (gradients averaged), else the model itself."""
    if not world().active:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Rebuild the (n, ...) tensor whose rows rank r computed at positions r, r + size, ...; every rank gets it."""
    w = world()
    if not w.active:
        return local
    per_rank = (n + w.size - 1) // w.size
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    torch_dist.all_gather(parts, padded)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for r, part in enumerate(parts):
        count = len(range(r, n, w.size))
        out[r::w.size] = part[:count]
    return out


def shard_report(rows: torch.Tensor, total: int, device: torch.device) -> dict:
    """Gather every rank's sample indices of one epoch: sizes per rank, and whether they are disjoint and
    cover all `total` samples (checked, not assumed)."""
    w = world()
    if not w.active:
        return {}
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(w.size)]
    torch_dist.all_gather(sizes, torch.tensor([len(rows)], device=device))
    everything = gather_rows_uneven(rows.to(device), [int(s) for s in sizes])
    unique = len(torch.unique(everything))
    return {"shard_sizes": [int(s) for s in sizes], "shards_disjoint": unique == len(everything),
            "shards_cover": unique == total}


def gather_rows_uneven(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    longest = max(sizes)
    padded = torch.full((longest,), -1, dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    torch_dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])

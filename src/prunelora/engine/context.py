"""What every method and loop receives besides its inputs: device, seed, progress bars, cost meter."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..models.small_maps import use_small_map_convs
from .meter import CostMeter


@dataclass
class Context:
    device: torch.device
    seed: int = 0
    progress: bool = True  # show progress bars (off with --quiet)
    meter: CostMeter = field(default=None)  # a new one per measured step (the original, each method)
    amp: bool = False  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on the CPU (where it computes bf16 natively: see `native_bf16`)
    channels_last: bool | None = False  # NHWC activations for convolutions; None = on CUDA only
    small_maps: bool = False  # CPU: convolutions over maps within their kernel's reach as one matrix product
    compile: bool = False  # torch.compile the training forward
    graphs: bool | None = None  # CUDA graphs for plain training steps; None = on CUDA (see engine.GraphedStep)
    # called with the model after every training epoch; its dict joins that epoch's history (learning curves)
    monitor: object = None

    def __post_init__(self):
        if self.meter is None:
            self.meter = CostMeter(self.device)
        if self.channels_last is None:
            self.channels_last = self.device.type == "cuda"
        if self.device.type != "cuda":  # on the CPU bf16 autocast is its own opt-in (cpu_bf16); graphs are CUDA's
            self.amp = bool(self.cpu_bf16)
            self.graphs = False
        elif self.graphs is None:
            self.graphs = True

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        # no cache of casted weights while a CUDA graph records: it would outlive the recording
        capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=not capturing)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device (channels-last memory format where asked; on the CPU, small-map convolutions)."""
        model = model.to(self.device)
        if self.small_maps and self.device.type == "cpu":
            use_small_map_convs(model)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch in the memory format the model runs in."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def model_input(self, data, images: torch.Tensor) -> torch.Tensor:
        """uint8 images of `data` (an ImageData) as the model's input: on the device, normalised, in its memory format."""
        return self.prepare_input(data.normalise(images.to(self.device)))


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA if available, else CPU; an unavailable device is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' was asked for but no CUDA GPU is available; use device=cpu or device=auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16, from /proc/cpuinfo); elsewhere bf16 is
    emulated, slower than fp32."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> int:
    """Set PyTorch's CPU threads (None = every core this process may use); returns the count."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads

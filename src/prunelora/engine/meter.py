"""The cost meter: wall time and peak memory of a step (training the original, one method), fed by the engine.

Memory on CUDA is `torch.cuda.max_memory_allocated` after a reset. The CPU has no per-method allocator
counter (the process's peak RSS keeps whatever earlier methods left), so on the CPU we count the tensor
memory a training step needs, the same quantities that dominate GPU memory: parameters + gradients +
optimizer state + the activations autograd saves for backward (each storage counted once), taken at the
largest step. It is exact for those tensors and does not depend on what ran before.
"""

from __future__ import annotations

import contextlib
import time
import weakref

import torch
from torch import nn

MB = 2**20

CPU_MEMORY_KIND = "tensor memory: params + grads + optimizer state + saved activations (largest step)"
CUDA_MEMORY_KIND = "torch.cuda.max_memory_allocated"


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
    return total


class CostMeter:
    """Measures one method's time and peak memory; the training loop reports each step to it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self._step_saved: dict[tuple[int, int], int] = {}
        # per optimizer (weakly held, so a later optimizer never inherits a freed one's entry): model + optimizer
        # state in bytes, fixed after its first step
        self._state_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.seconds = 0.0
        self._excluded = 0.0
        # seconds inside training epochs (`fit`'s loops); the rest of `seconds` is one-off work: pruning, wrapping,
        # BatchNorm recalibration, merging, importance estimates
        self.loop_seconds = 0.0
        self.optimizer_bytes = 0  # the largest optimizer state of the method (Adam: two tensors per trained weight)

    @property
    def kind(self) -> str:
        return CUDA_MEMORY_KIND if self.device.type == "cuda" else CPU_MEMORY_KIND

    @contextlib.contextmanager
    def measure(self):
        """Time the block; on CUDA also reset and read the allocator's peak."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        self._excluded = 0.0
        self.loop_seconds = 0.0
        try:
            yield self
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.seconds = time.perf_counter() - start - self._excluded

    @contextlib.contextmanager
    def paused(self):
        """Leave the block's wall time out of `seconds` (measurements taken for the report, not the method)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - start

    @contextlib.contextmanager
    def step(self):
        """Wrap forward + backward of one training step to count the activations saved for backward."""
        if self.device.type == "cuda":
            yield
            return
        self._step_saved = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            self._step_saved[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield

    def end_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """After optimizer.step(): model state + optimizer state + this step's saved activations (CPU); the
        optimizer state's size (every device)."""
        key = optimizer
        if key not in self._state_bytes:  # sizes do not change after the first step: count once, not every step
            params = list(model.parameters())
            grads = [p.grad for p in params]
            state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
            self.optimizer_bytes = max(self.optimizer_bytes, _tensor_bytes(state))
            self._state_bytes[key] = _tensor_bytes(params + list(model.buffers()) + grads + state)
        if self.device.type == "cuda":
            return
        self.peak_bytes = max(self.peak_bytes, self._state_bytes[key] + sum(self._step_saved.values()))

    def observe(self, tensors) -> None:
        """For steps without an optimizer (e.g. importance estimates): `tensors` (model state, gradients,
        accumulators) + the activations of the last `step()` block."""
        if self.device.type != "cuda":
            self.peak_bytes = max(self.peak_bytes, _tensor_bytes(list(tensors)) + sum(self._step_saved.values()))

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

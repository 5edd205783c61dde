"""CUDA graphs for plain training steps: record gather, normalise, forward, loss and backward once, then replay.

A CIFAR ResNet-50 training step at batch 128 is about 1 TFLOP of bf16 work, a few milliseconds on a datacenter
GPU, but eager PyTorch launches it as 851 kernels (Fine-tune) or 1,771 (PruneLoRA, whose adapters add dropout,
two small convolutions and an add per layer in each direction), measured on an H200 before the adapters' element-wise
passes were cut (docs/gpu.md); each launch costs the host
microseconds of Python and dispatch, and the GPU waits on the host. A replayed graph launches the step at once.

What stays eager, between replays: the optimizer step and the learning-rate schedule (so recipes and their
state are untouched) and the copy of the batch's row indices into the graph's input (device to device).
Only steps whose work is fixed qualify: cross-entropy on the data set's labels, no augmentation, no MixUp, one
process, full batches; `TrainingLoop.graph_ok` says which. PyTorch registers the CUDA random generator with the
graph and moves its offset on at every replay, so dropout in a replay draws the masks the eager step would have
drawn: on the H200 the default comparison gave the same UA, MIA, RA and TA to the last digit on three seeds
(docs/gpu.md). Replays raised peak memory by 4 to 90% there (cause not yet established), against 1.5 to 4x the
images per second.
"""

from __future__ import annotations

import torch

WARMUP_STEPS = 2  # eager steps on a side stream before recording: lazy initialisation (cuDNN, cuBLAS) stays out


class GraphedStep:
    """Replays one recorded training step for batches of exactly `batch_size` rows (train-set indices on the GPU).

    `body()` computes the step from `self.rows` and returns the batch's (loss sum, correct) on the device; it
    runs eagerly for the warm-up steps, is recorded on the next, then replayed.
    """

    def __init__(self, body, batch_size: int, device: torch.device, params: list[torch.nn.Parameter]):
        self.body, self.params = body, params
        self.rows = torch.zeros(batch_size, dtype=torch.long, device=device)  # the graph's input
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None  # the graph's output, overwritten by every replay
        self.grads: list[torch.Tensor | None] = []  # gradient tensors the graph writes
        self.warm = 0

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """Forward and backward on `rows`: gradients in the parameters' .grad, the batch's figures returned."""
        self.rows.copy_(rows, non_blocking=True)
        if self.warm < WARMUP_STEPS:
            self.warm += 1
            return self._side_stream(self._eager)
        if self.graph is None:
            self._record()
        else:
            # an eager step in between (a short last batch) replaced .grad: point it back at the graph's tensors
            for p, g in zip(self.params, self.grads):
                p.grad = g
        self.graph.replay()
        return self.out.clone()

    def _eager(self) -> torch.Tensor:
        # the previous step's gradients were made on the side stream and read by the optimizer on the main one:
        # wait for both before they are freed and their memory handed out again (two warm-up steps per `fit`)
        torch.cuda.synchronize()
        for p in self.params:
            p.grad = None
        return self.body()

    def _side_stream(self, fn):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = fn()
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _record(self) -> None:
        torch.cuda.synchronize()
        for p in self.params:  # backward then allocates .grad inside the graph's pool: replays overwrite it
            p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.body()
        self.grads = [p.grad for p in self.params]

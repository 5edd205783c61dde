"""The one training loop and what a step runs with, shared by every method and modality: `loop.py` (fit, its
recipe, optimizers, MixUp, BatchNorm recalibration), `graphs.py` (CUDA graphs for plain steps), `meter.py` (time and
memory of a step), `dist.py` (several processes: sharding, DDP, gathering) and `context.py` (device, seed,
autocast)."""

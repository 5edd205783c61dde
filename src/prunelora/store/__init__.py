"""What prunelora keeps on disk, shared by every modality: the model cache (`cache.py`, keyed by a checked hash),
safetensors checkpoints with their config and digest (`checkpoints.py`), per-method results as they finish and
resuming (`resume.py`), atomic writes and output checks (`files.py`), the environment record (`environment.py`) and
the lock on an output folder or cache entry (`lock.py`). `files` and `checkpoints` import no PyTorch."""

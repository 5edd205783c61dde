"""The environment record written next to every result: versions, device, threads, processes, how memory is
measured; and the part of it that a run's times and memory depend on (`setup_of`)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from ..world import world


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == "prunelora":  # run from a source tree (PYTHONPATH=src), not installed
            from .. import __version__

            return f"{__version__} (source tree)"
        return None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setup_of(env: dict) -> dict:
    """What a run's times and memory depend on, from its `environment` record: device, threads, processes."""
    return {"device": env.get("device"), "device_name": env.get("device_name"), "threads": env.get("threads"),
            "processes": env.get("world_size", 1)}


def environment(device: torch.device, memory_kind: str) -> dict:
    """Versions, device and threads: recorded next to every result."""
    packages = ("prunelora", "torch", "torchvision", "peft", "timm", "torch-pruning", "scikit-learn", "numpy", "safetensors",
                "transformers", "tokenizers", "faker", "rouge-score")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in packages},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": world().size,  # processes; time and memory are rank 0's
        "memory_measure": memory_kind,
    }

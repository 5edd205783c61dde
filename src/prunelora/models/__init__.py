"""Models: CIFAR-style ResNets (`resnet.py`) and a small-patch ViT (`vit.py`), the presets that name them with their
defaults (`presets.py`: `create_model`, `MODELS`, `TrainDefaults`), and the layer presets methods prune and adapt
(`layers.py`: `select_layers`, `classifier_name`). The presets are read without importing PyTorch."""

from .layers import HEAD, classifier_name, select_layers, target_presets
from .presets import MODELS, TIMM_PREFIX, ModelSpec, TrainDefaults, arch_of, check_timm_name, create_model, get_spec

__all__ = [
    "HEAD", "MODELS", "TIMM_PREFIX", "ModelSpec", "TrainDefaults", "arch_of", "check_timm_name", "classifier_name",
    "create_model", "get_spec", "select_layers", "target_presets",
]

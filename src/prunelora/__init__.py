"""prunelora: machine unlearning of image classifiers, PruneLoRA and its baselines, with honest metrics."""

from .api import evaluate_checkpoint, export, load_model, load_module, train, unlearn
from .config import ExperimentConfig, load_config
from .errors import UserError
from .methods import METHODS, register_method
from .models import MODELS, create_model
from .runner import run

__version__ = "0.1.0"

__all__ = [
    "METHODS", "MODELS", "ExperimentConfig", "UserError", "create_model", "evaluate_checkpoint", "export", "load_config",
    "load_model", "load_module", "register_method", "run", "train", "unlearn",
]

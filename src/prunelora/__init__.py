"""prunelora: machine unlearning of image classifiers, PruneLoRA and its baselines, with honest metrics.

A run flows through the package in this order: `config` (the settings) -> `experiment` (resolved config, context,
data, splits, the original) -> `engine` (the one training loop) -> `methods` (each method, on a copy of the
original) -> `metrics` (scores, compared with retrain) -> `report` (tables, plots, files). `runner.run` is the loop
over seeds and methods; `api` and `cli` are the same functions for Python and the command line.
"""

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

"""Unlearning methods, one file each, registered by name in `METHODS`.

- `protocol.py`: what a method gets and returns (`UnlearnTask` and its services, `Unlearned`), `register_method`;
- `variants.py`: which settings a method runs with (`hparams.<method>`, variants), `method_task`;
- `run.py`: `unlearn_one`, one method on a copy of the original, seeded and metered;
- `losses.py`, `importance.py`: pieces the baselines share. The training loop is `prunelora.engine`.

The imports below register every method; their order is the order `methods=all` runs them in.
"""

from .protocol import (
    METHODS,
    MethodConfig,
    MethodSpec,
    RecipeConfig,
    Unlearned,
    UnlearnTask,
    register_method,
    trainable_parameters,
    unfreeze,
)
from .variants import method_task, resolve_methods

# the paper's methods, then the baselines: `methods=all` and `prunelora list` keep this order
# isort: off
from . import retrain, finetune, prune_finetune, prunelora, lora  # noqa: F401
from . import grad_ascent, neggrad_plus, random_labels, l1_sparse, salun, scrub, ssd, bad_teacher  # noqa: F401
from . import boundary_shrink  # noqa: F401
# isort: on

__all__ = [
    "METHODS", "MethodConfig", "MethodSpec", "RecipeConfig", "UnlearnTask", "Unlearned", "method_task", "register_method",
    "resolve_methods", "trainable_parameters", "unfreeze",
]

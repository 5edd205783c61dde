"""What a command does, from a config to its files: `resolve.py` (the config resolved without PyTorch, request checks
from the data catalog's facts), `experiment.py` (context, data, splits, the original model), `unlearn.py` (one method
on a copy of the original), `bank.py` (the extra models a metric needs: shadow retrains, N-model ensembles), `run.py`
(the loop over seeds, requests and methods), `validation.py` (the validation split, objectives, eval.select=best),
`tune.py` (`prunelora tune`) and `verify.py` (`prunelora verify`)."""

"""Metrics of a model: accuracies and MIA attacks from one forward pass (`evaluate.py`, `mia.py`), the evidence that a
class is gone (`evidence.py`, `attack.py`), learning curves (`curves.py`) and the scoring of a run's models
against retrain (`scoring.py`). What a step costs is measured by `prunelora.engine.meter`."""

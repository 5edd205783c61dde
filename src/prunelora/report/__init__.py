"""Reports of results: a run's tables (`tables.py`, results.md), the mean ± std summary over seeds as markdown, CSV
and LaTeX (`summary.py`), merging runs of several directories (`merge.py`), the figures (`plots.py`) and writing
them all (`write.py`)."""

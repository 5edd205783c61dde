"""Learning curves are measured as the table is: the last point is the reported UA / RA, and every earlier point is
what the table would say had the method stopped there."""

from __future__ import annotations

import pytest

from prunelora.config import load_config
from prunelora.workflows.run import run

METHODS = ["finetune", "lora", "prunelora", "grad_ascent"]


def _runs(overrides, epochs: int) -> dict:
    cfg = load_config(overrides=[*overrides, f"unlearn.epochs={epochs}", "hparams.grad_ascent.epochs=" + str(epochs),
                                 f"methods=[{','.join(METHODS)}]", "eval.evidence=[]"])
    results = run(cfg, out=None, progress=False, log=lambda *a, **k: None)
    return {r["method"]: r for r in results["runs"] if r["method"] != "original"}


@pytest.fixture(scope="module")
def two_epochs(tiny_overrides):
    return _runs(tiny_overrides, 2)


def test_last_point_is_the_table_value(two_epochs):
    for name, entry in two_epochs.items():
        history, metrics = entry["info"]["history"], entry["metrics"]
        assert len(history) == 2, name
        assert history[-1]["forget_acc"] == pytest.approx(100.0 - metrics["UA"], abs=1e-9), name
        assert history[-1]["retain_acc"] == pytest.approx(metrics["RA"], abs=1e-9), name


def test_an_earlier_point_is_what_the_table_says_after_that_epoch(two_epochs, tiny_overrides):
    """The first epoch of a 2-epoch run is the whole of a 1-epoch run (constant learning rate, same seed)."""
    one_epoch = _runs(tiny_overrides, 1)
    for name in METHODS:
        first = two_epochs[name]["info"]["history"][0]
        assert first["forget_acc"] == pytest.approx(100.0 - one_epoch[name]["metrics"]["UA"], abs=1e-9), name
        assert first["retain_acc"] == pytest.approx(one_epoch[name]["metrics"]["RA"], abs=1e-9), name

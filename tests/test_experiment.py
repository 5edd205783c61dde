"""open_experiment: what every command starts from (resolved config, context, data, splits), checked before
anything is written."""

from __future__ import annotations

import pytest

from prunelora.config import load_config
from prunelora.errors import UserError
from prunelora.workflows.experiment import open_experiment


def test_open_experiment_resolves_loads_and_splits(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    exp = open_experiment(load_config(overrides=[*tiny_overrides, "device=cpu"]), progress=False, out=out)
    assert exp.config.train.optimizer == "sgd" and exp.config.lora.r == 8  # the ResNet preset's values
    assert exp.config.forget.classes == [3] and exp.splits.forget_classes == [3]
    assert exp.data.image_size == 8 and exp.ctx.device.type == "cpu" and not exp.ctx.progress
    assert not out.exists()  # nothing written yet
    seeded = exp.for_seed(5)
    assert seeded.config.seed == seeded.ctx.seed == 5 and exp.config.seed == exp.ctx.seed == 0
    task = seeded.task()
    assert task.data is exp.data and task.splits is exp.splits and task.config is seeded.config


def test_open_experiment_refuses_bad_settings_before_loading(tiny_overrides, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(UserError, match="is a file"):
        open_experiment(load_config(overrides=list(tiny_overrides)), progress=False, out=tmp_path / "file")
    with pytest.raises(UserError, match="unknown method"):
        open_experiment(load_config(overrides=[*tiny_overrides, "methods=[prunlora]"]), progress=False)

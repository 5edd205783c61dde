"""Every registry entry carries what the rest of the package reads from it: a data set its facts, a method a search
space over fields it has and sections that exist, an evidence metric a column for every key it produces, and
every list of table keys names keys some table shows. A new entry that lacks one fails here, not in a user's run."""

from __future__ import annotations

import dataclasses

import pytest

from prunelora import config as C
from prunelora.data.catalog import DATASETS, default_forget
from prunelora.methods.catalog import METHODS

SECTIONS = {f.name for f in dataclasses.fields(C.ExperimentConfig)}


def produced_keys_without_a_column(results: dict, modality: str = "image") -> set[str]:
    """Metric keys a run produced that no declaration names (`metrics.catalog.METRICS`: a metric or the parts its
    cell reads); used by the tiny runs with every evidence metric (tests/test_quality.py, tests/test_text.py)."""
    from prunelora.metrics.catalog import recorded

    produced = {k for r in results["runs"] for k in r["metrics"]}
    return produced - recorded(modality)


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).modality == "image" and n != "imagefolder"])
def test_every_embedded_data_set_declares_its_facts(name):
    spec = DATASETS.get(name)
    assert spec.classes and len(set(spec.classes)) == len(spec.classes) >= 2
    assert spec.native_size and spec.channels in (1, 3) and spec.image_size(None) > 0
    train, test = spec.sizes(0.2)
    assert train > 0 and test > 0
    for cls in default_forget(name):  # the class a request forgets when none is named exists
        assert cls in spec.classes if isinstance(cls, str) else 0 <= cls < len(spec.classes)


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).modality == "text"])
def test_every_text_data_set_names_its_authors_before_loading(name):
    from prunelora.config import DataConfig
    from prunelora.data.catalog import class_names

    names = class_names(DataConfig(name=name, authors=30))
    assert len(names) == len(set(names)) == 30 and class_names(DataConfig(name=name, authors=30)) == names


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_searches_fields_it_has_and_uses_sections_that_exist(name):
    spec = METHODS.get(name)
    assert set(spec.uses) <= SECTIONS, f"{name} uses sections {set(spec.uses) - SECTIONS} that do not exist"
    fields = {f.name for f in dataclasses.fields(spec.config)}
    assert set(spec.config.space) <= fields, f"{name}'s search space names {set(spec.config.space) - fields}"


def test_every_optimizer_the_config_accepts_is_built_and_no_other():
    """One list of optimizers (config.OPTIMIZERS): each builds its own class; an unknown name is an error, never Adam."""
    import torch

    from prunelora.engine.loop import Recipe, make_optimizer

    params = [("w", torch.nn.Parameter(torch.ones(2, 2)))]
    recipe = Recipe(epochs=1, batch_size=2, optimizer="sgd", lr=0.1, weight_decay=0.0)
    built = {name: type(make_optimizer(params, dataclasses.replace(recipe, optimizer=name))) for name in C.OPTIMIZERS}
    assert built == {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    with pytest.raises(ValueError, match="optimizer 'lion' is not one of sgd, adam, adamw"):
        make_optimizer(params, dataclasses.replace(recipe, optimizer="lion"))

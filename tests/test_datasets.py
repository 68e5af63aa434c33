"""The bundled data sets load by name, with their cards."""

from __future__ import annotations

import pytest

from calibkit.datasets import list_datasets, load_dataset


@pytest.mark.parametrize("name", list_datasets())
def test_bundled_sets_load_with_a_card(name: str) -> None:
    ds = load_dataset(name)
    assert len(ds.frame) >= 200
    assert set(ds.frame[ds.label_column]) == set(ds.verbalizer.classes)
    assert "License" in ds.card and "Size" in ds.card
    assert ds.template.fields == ds.fields


def test_unknown_name() -> None:
    with pytest.raises(KeyError, match="bundled ones are"):
        load_dataset("imdb")

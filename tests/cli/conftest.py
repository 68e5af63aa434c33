"""The command-line tests' data files and model stand-ins."""

from __future__ import annotations

import pytest

from cli_tools import NamedBackend, open_with, template_score


@pytest.fixture
def reviews(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\nA wonderful film.,good\nA boring mess.,bad\nLoved it.,good\nAwful.,bad\n")
    return data


# -- flags checked before the model is asked anything ------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as building its model."""
    def touched(*args, **kwargs):
        raise AssertionError("the model was built before every flag was checked")

    open_with(monkeypatch, touched)


@pytest.fixture
def sorted_reviews(tmp_path):
    """A file sorted by label, as many public files are: the first rows are all 'bad'."""
    data = tmp_path / "sorted.csv"
    bad = ["Awful.", "A boring mess.", "Dull and long.", "I hated it.", "A waste of time.", "Terrible acting."]
    good = ["A wonderful film.", "Loved it.", "A joy.", "Brilliant and warm.", "Superb.", "Great fun."]
    data.write_text("review,stars\n" + "".join(f"{t},bad\n" for t in bad) + "".join(f"{t},good\n" for t in good))
    return data


# -- rows with no text or no label: an error naming the lines, or --drop-missing ----------
@pytest.fixture
def gappy_reviews(tmp_path):
    """Reviews with an empty text cell (line 3), a blank one (line 5) and no label (line 6)."""
    data = tmp_path / "gappy.csv"
    data.write_text("review,stars\nAwful.,bad\n,bad\nGreat fun.,good\n   ,good\nFine.,\n"
                    "Loved it.,good\nDull.,bad\nA bore.,bad\nSuperb.,good\n")
    return data


@pytest.fixture
def fake_models(monkeypatch):
    import calibkit.scoring

    calls: list[str] = []
    import calibkit.study

    monkeypatch.setattr(calibkit.scoring, "score", template_score(calls))
    monkeypatch.setattr(calibkit.study, "score", template_score(calls))
    open_with(monkeypatch, lambda model=None, **kw: NamedBackend(model))
    return calls

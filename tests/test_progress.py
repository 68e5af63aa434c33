"""One rule for progress bars: late by default, TQDM_DISABLE honoured, explicit choices obeyed."""

from __future__ import annotations

import pytest

from calibkit.progress import PROGRESS_DELAY, progress_bar


@pytest.mark.parametrize("progress, env, disabled, delay", [
    (None, None, False, PROGRESS_DELAY),
    (None, "1", True, PROGRESS_DELAY),
    (True, None, False, 0.0),
    (True, "1", False, 0.0),  # asked for in so many words
    (False, None, True, 0.0),
])
def test_the_rule(monkeypatch, progress, env, disabled, delay) -> None:
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    bar = progress_bar(10, progress, desc="work")
    try:
        assert bar.disable is disabled
        if not disabled:
            assert bar.delay == delay
    finally:
        bar.close()

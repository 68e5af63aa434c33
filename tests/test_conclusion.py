"""calibkit.conclusion: the best row by a proper scoring rule, and the rows not to be trusted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import calibkit as ck
from calibkit import metrics as M
from calibkit.comparison import compare
from calibkit.conclusion import CONSTANT_SPREAD, conclude, describe_fit, flags_of
from calibkit.evaluation import evaluate

from synthetic import at_chance


def test_a_temperature_at_its_bound_is_flagged_and_not_ranked_best_though_its_ece_is() -> None:
    X, y = at_chance()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1, 2], n_boot=50, progress=False)
    # The premise, as the issue found it: T at its bound flattens every prediction to about
    # 1/3, which has the best ECE of the table ...
    assert ev.fitted["temperature"].temperature_ == pytest.approx(100)
    assert ev.table["ece"].idxmin() == "temperature"
    # ... and the warning still reaches the caller, and is kept.
    assert any("reached the bound T = 100" in str(w.message) for w in caught)
    assert any("reached the bound T = 100" in w for w in ev.warnings["temperature"])
    assert list(ev.flags) == ["temperature"] and "the fit warned" in ev.flags["temperature"][0]
    c = conclude(ev)
    assert c.best == "uncalibrated" and "temperature" in c.flagged
    assert any("reached the bound" in w for w in c.warnings)
    assert "⚠ temperature" in "\n".join(c.lines())


def test_nearly_constant_predictions_are_flagged_with_their_spread() -> None:
    p = np.full((50, 3), 1 / 3) + np.linspace(0, 0.9 * CONSTANT_SPREAD, 50)[:, None] * [1, -1, 0]
    (reason,) = flags_of(p)
    assert reason.startswith("predictions nearly constant") and "0.045" in reason
    assert flags_of(np.eye(3)[np.arange(50) % 3] * 0.9 + 0.1 / 3) == []


def test_the_best_by_nll_and_its_paired_difference_from_uncalibrated() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=400)
    X = (rng.normal(size=(400, 2)) + 1.5 * np.eye(2)[y]) * 3  # overconfident: temperature helps
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=200, seed=3, progress=False)
    c = conclude(ev)
    assert (c.metric, c.best, c.baseline) == ("nll", "temperature", "uncalibrated")
    assert c.value == pytest.approx(tuple(ev.table.loc["temperature", ["nll", "nll_low", "nll_high"]]))
    assert c.brier == pytest.approx(tuple(ev.table.loc["temperature", ["brier", "brier_low", "brier_high"]]))
    r = M.paired_bootstrap(M.nll, ev.y, ev.probs["temperature"], ev.probs["uncalibrated"], n_boot=200, seed=3)
    assert c.versus == pytest.approx((r.estimate, r.low, r.high))
    assert c.verdict == "better" and c.lines()[1].startswith("It is better than the baseline uncalibrated")
    assert c.did["temperature"].startswith("temperature T = ") and "softens" in c.did["temperature"]


def test_a_comparison_ranks_by_its_paired_differences_and_skips_flagged_rows() -> None:
    X, y = at_chance(seed=2)
    rng = np.random.default_rng(5)
    sharp = 2 * np.eye(3)[y] + rng.normal(size=(len(y), 3)) * 1.5
    with pytest.warns(UserWarning, match="reached the bound T = 100"):
        c = compare({"chance": X, "sharp": sharp}, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1, 2],
                    baseline="chance", n_boot=50, progress=False)
    said = conclude(c)
    assert list(said.flagged) == ["chance · temperature"]
    assert said.best in ("sharp · uncalibrated", "sharp · temperature")
    assert said.versus == pytest.approx(tuple(c.table.loc[said.best, ["diff_nll", "diff_nll_low", "diff_nll_high"]]))
    assert said.verdict == "better"
    assert set(said.did) == {"chance · temperature", "sharp · temperature"}


def test_without_a_proper_scoring_rule_no_row_is_named_best() -> None:
    X, y = at_chance()
    ev = evaluate(X, y, {}, classes=[0, 1, 2], n_boot=20, metrics=["accuracy", "ece"], progress=False)
    c = conclude(ev)
    assert c.best is None and c.lines()[0].startswith("No proper scoring rule was measured")


def test_a_chain_says_what_each_step_did() -> None:
    X, y = at_chance(seed=4)
    chain = ck.make_calibrator("contextual+temperature", [0, 1, 2], content_free=X[:3])
    with pytest.warns(UserWarning, match="reached the bound"):
        fitted = chain.fit(X, y)
    said = describe_fit(fitted)
    assert "divides out the estimated prior" in said and "; then temperature T = " in said

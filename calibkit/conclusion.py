"""What a report says first: the best row by a proper scoring rule, whether it beats the
baseline, what each calibrator did, and which rows are not to be trusted, and why.

A row is *flagged* when its fit warned (temperature at a bound of its search, a solver
that did not converge) or when its predictions are nearly constant: every held-out example
gets about the same probabilities. Such a row can show the best ECE (a uniform predictor at
chance is perfectly calibrated on average) while it ranks nothing, so :func:`conclude`
never names a flagged row the best, and the report marks it wherever it appears.

>>> import numpy as np, calibkit as ck
>>> from calibkit.evaluation import evaluate
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, size=400)
>>> X = rng.normal(size=(400, 2)) + 1.5 * np.eye(2)[y]
>>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=50, progress=False)
>>> c = conclude(ev)
>>> c.best, c.metric, c.flagged
('temperature', 'nll', {})
>>> print(c.lines()[0])  # doctest: +ELLIPSIS
Best by NLL: temperature, 0.3010 [0.2360, 0.3846] (Brier 0.0914 [0.0727, 0.1188]).
>>> print(c.lines()[1])  # doctest: +ELLIPSIS
It is better than the baseline uncalibrated: Δ NLL -0.0274 [-0.0529, -0.0000], paired, at 95%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import metrics as M

if TYPE_CHECKING:
    from .comparison import Comparison
    from .evaluation import Evaluation

__all__ = ["CONSTANT_SPREAD", "FLAG", "Conclusion", "conclude", "describe_fit", "flags_of", "marked"]

#: Marks a flagged row wherever it is named: tables, figures, the conclusion.
FLAG = "⚠"

#: A row whose every class probability varies by less than this over the held-out examples
#: predicts (nearly) the same distribution for every example.
CONSTANT_SPREAD = 0.05

# Proper scoring rules, in the order the conclusion ranks by.
_PROPER = ("nll", "brier")
_NAMES = {"nll": "NLL", "brier": "Brier"}


def flags_of(p: np.ndarray, fit_warnings: Sequence[str] = ()) -> list[str]:
    """Why a row's probabilities ``p`` (n×K, held out) are not to be trusted; [] when nothing is wrong.

    >>> flags_of(np.full((5, 2), 0.5))
    ['predictions nearly constant: each class probability varies by 0 over the held-out examples']
    >>> flags_of(np.array([[0.9, 0.1], [0.2, 0.8]]), ["temperature reached the bound T = 100"])
    ['the fit warned: temperature reached the bound T = 100']
    """
    reasons = [f"the fit warned: {w}" for w in dict.fromkeys(fit_warnings)]
    p = np.asarray(p, dtype=float)
    if p.ndim == 2 and len(p) > 1:
        spread = float((p.max(axis=0) - p.min(axis=0)).max())
        if spread < CONSTANT_SPREAD:
            reasons.append(f"predictions nearly constant: each class probability varies by {spread:.2g} over the "
                           "held-out examples")
    return reasons


def marked(name: str, flags: Mapping[str, Any]) -> str:
    """A row's name as a table or figure shows it: with :data:`FLAG` when it is flagged.

    >>> marked("temperature", {"temperature": ["predictions nearly constant"]}), marked("uncalibrated", {})
    ('temperature ⚠', 'uncalibrated')
    """
    return f"{name} {FLAG}" if name in flags else name


def describe_fit(estimator: Any) -> str:
    """What a fitted calibrator did, in a few words (the parameters it found).

    >>> import calibkit as ck
    >>> t = ck.TemperatureScaling().fit(np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 1, 1])
    >>> describe_fit(t)  # doctest: +ELLIPSIS
    'temperature T = ... (...)'
    """
    steps = getattr(estimator, "steps", None)
    if steps is not None:  # a chain: a Pipeline of calibrators
        return "; then ".join(describe_fit(step) for _, step in steps)
    name = type(estimator).__name__
    if hasattr(estimator, "temperature_"):
        t = float(estimator.temperature_)
        how = "softens the scores" if t > 1 else "sharpens the scores" if t < 1 else "leaves the scores"
        return f"temperature T = {t:.3g} ({how})"
    if hasattr(estimator, "log_prior_"):
        prior = np.exp(np.asarray(estimator.log_prior_, dtype=float))
        shown = ", ".join(f"{v:.3g}" for v in prior[:6]) + (", ..." if len(prior) > 6 else "")
        return f"{name}: divides out the estimated prior [{shown}]"
    if hasattr(estimator, "coef_"):
        coef = np.atleast_1d(np.asarray(estimator.coef_, dtype=float))
        return f"{name}: a linear map of the scores (weights {coef.min():.3g} to {coef.max():.3g})"
    if hasattr(estimator, "maps_"):
        return f"{name}: a monotone map of each class's probability, fitted one class against the rest"
    if hasattr(estimator, "calibrators_"):
        return f"{name}: {len(estimator.calibrators_)} cross-fitted calibrators"
    return f"{name}, fitted"


@dataclass
class Conclusion:
    """What :func:`conclude` found; :meth:`lines` says it in sentences."""

    metric: str | None  # the proper scoring rule ranked by ("nll", else "brier"), None if neither was measured
    best: str | None  # the best row not flagged, by ``metric``
    value: tuple[float, float, float] | None  # the best row's metric, low, high
    brier: tuple[float, float, float] | None  # its Brier score beside (when ranked by NLL)
    baseline: str
    versus: tuple[float, float, float] | None  # the best row's metric less the baseline's, paired, with its interval
    level: float
    flagged: dict[str, list[str]] = field(default_factory=dict)
    did: dict[str, str] = field(default_factory=dict)  # calibrator (or row) -> what its fit did
    warnings: list[str] = field(default_factory=list)  # every warning of the run

    @property
    def verdict(self) -> str | None:
        """'better', 'worse' or 'no different' than the baseline at the level; None without a comparison."""
        if self.versus is None:
            return None
        _, lo, hi = self.versus
        return "better" if hi < 0 else "worse" if lo > 0 else "no different"

    def lines(self) -> list[str]:
        """The conclusion as sentences: :meth:`headline`, each flagged row, what each calibrator did.
        Plain text (the report escapes it)."""
        return [*self.headline(), *(f"{FLAG} {row}: {'; '.join(r)}. Not ranked." for row, r in self.flagged.items()),
                *(f"{name}: {did}." for name, did in self.did.items())]

    def headline(self) -> list[str]:
        """The best row by the proper scoring rule with its interval, and how it compares with the baseline."""
        out = []
        if self.metric is None:
            out.append("No proper scoring rule was measured (NLL or Brier: metrics= / --metrics), so no row is "
                       "named the best.")
        elif self.best is None:
            out.append(f"Every row is flagged (below), so none is named the best by {_NAMES[self.metric]}.")
        else:
            v, lo, hi = self.value
            line = f"Best by {_NAMES[self.metric]}: {self.best}, {v:.4f} [{lo:.4f}, {hi:.4f}]"
            if self.brier is not None:
                b, blo, bhi = self.brier
                line += f" (Brier {b:.4f} [{blo:.4f}, {bhi:.4f}])"
            out.append(line + ".")
            if self.best == self.baseline:
                out.append(f"That is the baseline, {self.baseline}.")
            elif self.versus is not None:
                d, dlo, dhi = self.versus
                what = {"better": "better than", "worse": "worse than",
                        "no different": "not distinguishable from"}[self.verdict]
                out.append(f"It is {what} the baseline {self.baseline}: Δ {_NAMES[self.metric]} {d:+.4f} "
                           f"[{dlo:+.4f}, {dhi:+.4f}], paired, at {self.level:.0%}.")
        return out


def conclude(result: Evaluation | Comparison) -> Conclusion:
    """The conclusion of an evaluation (baseline: uncalibrated) or a comparison (its baseline)."""
    table, metrics = result.table, list(result.metrics)
    flagged = result.flags
    level = float(result.info.get("level", 0.95))
    baseline = getattr(result, "baseline", "uncalibrated")  # an Evaluation's: the model's own scores
    metric = next((m for m in _PROPER if m in metrics), None)
    best = value = brier = versus = None
    if metric is not None:
        ranked = table.loc[[r for r in table.index if r not in flagged], metric].sort_values(kind="stable")
        if len(ranked):
            best = str(ranked.index[0])
            value = _span(table, best, metric)
            if metric == "nll" and "brier" in metrics:
                brier = _span(table, best, "brier")
            if best != baseline:
                if f"diff_{metric}" in table.columns:
                    versus = _span(table, best, f"diff_{metric}")
                else:
                    # the proper scoring rules take no settings (unlike ECE's bins)
                    r = M.paired_bootstrap(getattr(M, metric), result.y, result.probs[best], result.probs[baseline],
                                           n_boot=int(result.info.get("bootstrap", 1000)), level=level,
                                           seed=int(result.info.get("seed", 0)))
                    versus = (r.estimate, r.low, r.high)
    return Conclusion(metric=metric, best=best, value=value, brier=brier, baseline=baseline, versus=versus,
                      level=level, flagged=flagged, did={n: describe_fit(e) for n, e in result.fitted.items()},
                      warnings=result.all_warnings)


def _span(table: Any, row: str, col: str) -> tuple[float, float, float]:
    return float(table.loc[row, col]), float(table.loc[row, f"{col}_low"]), float(table.loc[row, f"{col}_high"])

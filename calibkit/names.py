"""The names the library and the command line share, spelled once: scoring methods,
metrics and calibrators.

This module imports nothing heavy, so that ``calibkit --help`` can list the choices
without loading scikit-learn or pandas. The functions that the names stand for live
where they are computed (:data:`calibkit.evaluation.METRICS`,
:func:`calibkit.estimator.make_calibrator`); tests keep the two in step.

>>> METHODS
('auto', 'topk', 'exact')
>>> check_calibration("contextual+temperature")
['contextual', 'temperature']
"""

from __future__ import annotations

from typing import Sequence

__all__ = [
    "BACKEND_OPTIONS", "CALIBRATIONS", "CHAIN_ORDER", "DEFAULT_CALIBRATORS", "METHODS", "METRIC_NAMES",
    "check_calibration", "check_calibrators",
]

#: How label forms are scored (:func:`calibkit.score`'s ``method=``).
METHODS = ("auto", "topk", "exact")

#: How a model named by a string is opened (:func:`calibkit.backends.factory.open_backend`'s
#: options, which a study and the command line take by these names).
BACKEND_OPTIONS = ("api_base", "api_key", "backend", "device", "dtype", "threads", "timeout", "max_in_flight",
                   "workers", "ray")

#: The metrics of a report, in its column order (:data:`calibkit.evaluation.METRICS`).
METRIC_NAMES = ("accuracy", "nll", "brier", "ece", "smooth_ece")

#: Calibrators by name, for ``calibration=`` and ``calibkit eval --calibrators``.
#: "none" renormalises the model's scores over the classes and fits nothing.
CALIBRATIONS = (
    "none",
    "temperature",
    "vector",
    "matrix",
    "platt",
    "isotonic",
    "histogram",
    "contextual",
    "domain",
    "batch",
)


#: The kinds of calibration a chain (``"a+b+c"``) is made of, in the order it takes them:
#: a prior correction divides out the model's bias in its raw scores, a scaling maps
#: log-probabilities to log-probabilities, a binning returns step-function probabilities.
CHAIN_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prior correction", ("contextual", "domain", "batch")),
    ("scaling", ("temperature", "vector", "matrix", "platt")),
    ("binning", ("isotonic", "histogram")),
)

_CHAIN_RULE = "a chain joins with '+', in this order, at most one {}, one {} and one {}, e.g. {!r}".format(
    *(f"{kind} ({', '.join(names)})" for kind, names in CHAIN_ORDER),
    "+".join(names[0] for _, names in CHAIN_ORDER),
)

#: The calibrators a study fits when none are named.
DEFAULT_CALIBRATORS = ("contextual", "batch", "temperature", "contextual+temperature")


def check_calibration(name: str) -> list[str]:
    """The parts of a calibration name (``"a+b"`` chains them), or a ValueError saying what is allowed.

    Checks the spelling only, so that a bad chain fails before anything is scored;
    :func:`make_calibrator` calls it first. See :data:`CHAIN_ORDER` for the chains.

    >>> check_calibration("contextual+temperature+isotonic")
    ['contextual', 'temperature', 'isotonic']
    >>> check_calibration("isotonic+temperature")
    Traceback (most recent call last):
    ...
    ValueError: calibration='isotonic+temperature': the binning 'isotonic' cannot come before the scaling ...
    """
    if not isinstance(name, str):
        raise ValueError(f"calibration must be a name such as 'temperature' (got {name!r})")
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in CALIBRATIONS]
    if unknown:
        what = f"unknown calibration {unknown[0]!r}" if unknown[0] else "an empty name"
        raise ValueError(
            f"{what}{f' in calibration={name!r}' if len(parts) > 1 else ''}; "
            f"choose from {', '.join(CALIBRATIONS)}, or join them with '+' ({_CHAIN_RULE})"
        )
    if len(parts) == 1:
        return parts
    if "none" in parts:
        raise ValueError(
            f"calibration={name!r}: 'none' fits nothing and takes no part in a chain; "
            f"use calibration='none' alone, or {_CHAIN_RULE}"
        )
    rank = {part: (i, kind) for i, (kind, names) in enumerate(CHAIN_ORDER) for part in names}
    for a, b in zip(parts, parts[1:]):
        (ra, kind_a), (rb, kind_b) = rank[a], rank[b]
        if ra == rb:
            problem = f"{a!r} and {b!r} are both a {kind_a}"
        elif ra > rb:
            problem = f"the {kind_a} {a!r} cannot come before the {kind_b} {b!r}"
        else:
            continue
        raise ValueError(f"calibration={name!r}: {problem}; {_CHAIN_RULE}")
    return parts


def check_calibrators(names: str | Sequence[str]) -> list[str]:
    """A list of calibrator names (or one comma-separated string) checked, each error said
    of its ``calibrators=`` entry.

    >>> check_calibrators("contextual, temperature")
    ['contextual', 'temperature']
    >>> check_calibrators(["temperature", "tempreature"])
    Traceback (most recent call last):
    ...
    ValueError: calibrators= tempreature: unknown calibration 'tempreature'; choose from ...
    """
    chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not chosen:
        raise ValueError("calibrators= needs at least one name, e.g. ['contextual', 'temperature']")
    for name in chosen:
        try:
            check_calibration(name)
        except ValueError as e:
            message = str(e)  # a chain's message names it (calibration=, which reads calibrators=)
            raise ValueError(message if "calibration=" in message else f"calibrators= {name}: {message}") from None
    return chosen

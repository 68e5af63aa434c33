"""A calibration study: templates × verbalizers × models × calibrators on one held-out split.

:class:`Study` takes what ``calibkit eval`` takes, by the same names; :meth:`Study.run`
scores every template × verbalizer × model once (the response cache makes a rerun free
and an interrupted run resumable), fits every calibrator on the calibration split and
measures each row on the held-out rest (:func:`calibkit.comparison.compare`). It returns
:class:`StudyResults`: the comparison (``.table``, ``.probabilities()``) with the
figures and :meth:`StudyResults.write_report`. One configuration is a study of one row.

>>> import calibkit as ck
>>> study = ck.Study("sentiment", limit=40, stratify=True,
...                  templates={"plain": "Review: {text}\\nSentiment:", "asked": "{text}\\nWas it good or bad?"},
...                  calibrators=["temperature"], bootstrap=100)              # doctest: +SKIP
>>> results = study.run()                                                     # doctest: +SKIP
>>> results.table[["template", "calibrator", "nll", "diff_nll"]]              # doctest: +SKIP
>>> results.plot_reliability(); results.write_report("reports/sentiment")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence

import numpy as np

from .backends.base import Backend
from .backends.factory import check_k, check_options, open_backend
from .comparison import SEPARATOR, Comparison, baseline_row, compare
from .conclusion import marked
from .datasets import Dataset
from .datasets.selection import checked_labels, select
from .estimator import make_calibrator
from .evaluation import Evaluation, metric_names
from .label_scores import LabelScores
from .names import BACKEND_OPTIONS, DEFAULT_CALIBRATORS, METHODS, check_calibrators
from .progress import STEPS, kept_warnings, say
from .scoring import score
from .templates import PromptTemplate, Verbalizer

__all__ = ["LOW_LABEL_MASS", "LowLabelMassWarning", "Study", "StudyResults"]

#: A configuration whose median label mass (the probability the model gives the label forms
#: together) is below this is warned of: the model almost never says those forms.
LOW_LABEL_MASS = 1e-3


class LowLabelMassWarning(UserWarning):
    """The model almost never says a configuration's label forms (median label mass below :data:`LOW_LABEL_MASS`)."""


@dataclass
class StudyResults(Comparison):
    """What :meth:`Study.run` measured: a :class:`~calibkit.comparison.Comparison`, with
    the figures and the report.

    ``single`` is True for one configuration compared with nothing (no ``baseline`` or
    ``alpha`` asked): its report is the calibration report of that configuration
    (:func:`calibkit.report.write_report`), whose evaluation is :meth:`evaluation_of`.
    ``scores`` holds each configuration's :class:`~calibkit.LabelScores` of every example
    (the label mass among them), by the configuration's label.
    """

    single: bool = False
    scores: Mapping[str, LabelScores] = field(default_factory=dict)

    def evaluation_of(self, config: str | None = None) -> Evaluation:
        """One configuration's rows as an :class:`~calibkit.evaluation.Evaluation` (named by
        calibrator; ``config``: its label, default the first)."""
        if not self.evaluations:
            raise ValueError("these results keep no per-configuration evaluation")
        label = config or next(iter(self.evaluations))
        if label not in self.evaluations:
            raise ValueError(f"config={label!r} is not one of {list(self.evaluations)}")
        return self.evaluations[label]

    def plot_reliability(self, rows: Sequence[str] | None = None, *, ncols: int | None = None) -> Any:
        """Reliability diagrams of ``rows`` (default: all), side by side; returns the Figure."""
        from .diagrams import plot_reliability_grid

        flags = self.flags
        probs = {marked(r, flags): self.probs[r] for r in (rows or list(self.probs))}
        return plot_reliability_grid(self.y, probs, ncols=ncols or min(len(probs), 4))

    def plot_per_class(self, row: str | None = None, *, ncols: int | None = None) -> Any:
        """One-vs-rest reliability diagrams of one row (default: the baseline), a panel per class."""
        from .diagrams import classwise_reliability_data, plot_classwise_reliability

        row = row or self.baseline
        if row not in self.probs:
            raise ValueError(f"row={row!r} is not one of the rows {list(self.probs)}")
        labels = np.array(self.classes, dtype=object)[self.y]
        data = classwise_reliability_data(labels, self.probs[row], classes=self.classes)
        return plot_classwise_reliability(data, ncols=ncols or min(len(self.classes), 4),
                                          title=f"{marked(row, self.flags)}: each class against the rest")

    def plot_risk_coverage(self, rows: Sequence[str] | None = None, *, ax: Any = None) -> Any:
        """Risk-coverage curves of ``rows`` (default: all), with their AURC; returns the Axes."""
        from .diagrams import plot_risk_coverage
        from .selective import risk_coverage

        chosen, flags = rows or list(self.probs), self.flags
        curves = {f"{marked(r, flags)} (AURC {self.table.loc[r, 'aurc']:.3f})": risk_coverage(self.y, self.probs[r]) for r in chosen}
        return plot_risk_coverage(curves, ax=ax)

    def write_report(self, folder: str | Path, *, title: str = "calibkit study", progress: bool | None = None,
                     overwrite: bool = False) -> Path:
        """Write the report folder (:func:`calibkit.report.write_report`) and return it: for one
        configuration its calibration report (as ``calibkit eval`` writes it), else the comparison's.
        A folder holding another report is replaced only with ``overwrite``."""
        from .report import write_report

        return write_report(self.evaluation_of() if self.single else self, folder, title=title, progress=progress,
                            overwrite=overwrite)


class Study:
    """Every template × verbalizer × model, scored once, calibrated and compared on the same held-out examples.

    Parameters are those of ``calibkit eval``, by the same names:

    - ``data``: a bundled data set's name, a file, ``hf:<name>``, a DataFrame, or the texts
      with their labels ``y``; ``format``, ``text_column``, ``label_column``,
      ``drop_missing`` say how to read it, ``limit`` (with ``shuffle`` or ``stratify``,
      seeded by ``seed``) how many rows to take.
    - ``templates``, ``verbalizers``, ``models``: one, a list (named t1, t2 ..., v1 ...,
      and by file or model name), or a dict of name -> value; None: the data set's own,
      the embedded model. A model is a name (opened with ``api_base``, ``api_key``,
      ``backend``, ``device``, ``dtype``, ``threads``, ``timeout``, ``max_in_flight``,
      ``workers``, ``ray``: :func:`calibkit.backends.factory.open_backend`) or a Backend.
    - ``method`` and ``k``: how label forms are scored (:func:`calibkit.score`).
    - ``calibrators``: names of :data:`calibkit.names.CALIBRATIONS` ("a+b" chains them).
    - ``calibration_fraction``, ``bootstrap``, ``metrics``, ``seed``: the split, the
      intervals' resamples and the metrics (:func:`calibkit.evaluation.evaluate`);
      ``baseline`` the row the others are compared with (a template's name alone, among
      several verbalizers, means it with the first verbalizer; a verbalizer's alone, the first
      template), ``alpha`` the conformal sets' miss rate (:func:`calibkit.comparison.compare`;
      default 0.1 with several rows).
    """

    def __init__(
        self,
        data: Any = "sentiment",
        y: Sequence[Hashable] | None = None,
        *,
        templates: Any = None,
        verbalizers: Any = None,
        models: Any = None,
        calibrators: str | Sequence[str] = DEFAULT_CALIBRATORS,
        method: str = "auto",
        k: int | None = None,
        limit: int | None = None,
        shuffle: bool = False,
        stratify: bool = False,
        drop_missing: bool = False,
        format: str | None = None,
        text_column: str | Sequence[str] | None = None,
        label_column: str | None = None,
        calibration_fraction: float = 0.5,
        bootstrap: int = 1000,
        metrics: Sequence[str] | None = None,
        baseline: str | tuple | None = None,
        alpha: float | None = None,
        seed: int = 0,
        cache: Any = None,
        progress: bool | None = None,
        **backend_options: Any,
    ) -> None:
        unknown = sorted(set(backend_options) - set(BACKEND_OPTIONS))
        if unknown:
            raise TypeError(f"Study() got unknown option(s) {unknown}; a model's options are {list(BACKEND_OPTIONS)}")
        self.data, self.y = data, y
        self.templates = _named(templates, "templates", "t")
        self.verbalizers = _named(verbalizers, "verbalizers", "v")
        self.models = _named(models, "models", None)
        self.calibrators = check_calibrators(calibrators)
        self.method, self.k = method, k
        self.selection = dict(format=format, text_column=text_column, label_column=label_column,
                              drop_missing=drop_missing, limit=limit, shuffle=shuffle, stratify=stratify, seed=seed)
        self.calibration_fraction, self.bootstrap, self.seed = calibration_fraction, bootstrap, seed
        self.metrics = metric_names(metrics)
        self.baseline, self.alpha = baseline, alpha
        self.cache, self.progress = cache, progress
        self.backend_options = backend_options
        self._check()

    def __repr__(self) -> str:
        return (f"Study({self.data!r}, templates={list(self.templates)}, verbalizers={list(self.verbalizers)}, "
                f"models={list(self.models)}, calibrators={self.calibrators})")

    @property
    def single(self) -> bool:
        """One configuration compared with nothing: a calibration report, no differences or sets."""
        return len(self.templates) * len(self.verbalizers) * len(self.models) == 1 \
            and self.baseline is None and self.alpha is None

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method= must be one of {', '.join(METHODS)} (got {self.method!r})")
        check_k(None, self.k)  # before anything is loaded; the cap once the model is open
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 1:
            raise ValueError(f"bootstrap= must be at least 1 (got {self.bootstrap}); 1000 is usual")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction= must lie between 0 and 1 (got {self.calibration_fraction})")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"alpha= must lie between 0 and 1: the conformal sets miss the truth at most that "
                             f"often (got {self.alpha}; 0.1 is usual)")
        check_options(**self.backend_options)
        if not self.single and importlib.util.find_spec("mapie") is None:
            raise ImportError("a study's conformal sets (alpha=) are MAPIE's: pip install 'calibkit[conformal]'")

    # -- the run -------------------------------------------------------------------------
    def load(self) -> dict[tuple[str, str], Dataset]:
        """Every template × verbalizer's data set, checked to score the same rows and classes."""
        data: dict[tuple[str, str], Dataset] = {}
        first = None
        for tn, t in self.templates.items():
            for vn, v in self.verbalizers.items():
                with _quiet(bool(data)):  # the sample and the drops are said once
                    try:
                        ds = select(self.data, self.y, template=t, verbalizer=v, **self.selection)
                        labels = checked_labels(ds)
                    except ValueError as e:
                        if len(self.templates) * len(self.verbalizers) == 1:
                            raise
                        raise ValueError(f"{tn}{SEPARATOR}{vn}: {e}") from None
                if first is None:
                    first = (tn, vn, labels, ds.classes)
                    self._two_classes(labels)
                elif ds.classes != first[3]:
                    raise ValueError(f"verbalizers= {vn} has the classes {ds.classes} and {first[1]} {first[3]}; the "
                                     "configurations of a comparison score the same classes, in one order")
                elif [repr(x) for x in labels] != [repr(x) for x in first[2]]:
                    raise ValueError(f"{tn}{SEPARATOR}{vn} reads other rows than {first[0]}{SEPARATOR}{first[1]} "
                                     "(drop_missing=True drops the rows missing a template's fields); compare "
                                     "templates of the same fields, or fill the missing values in")
                data[(tn, vn)] = ds
        return data

    def run(self) -> StudyResults:
        """Load, score, calibrate and compare; the :class:`StudyResults`.

        Before scoring it says (:data:`calibkit.progress.STEPS`) the template and verbalizer
        it chose where none was given; after scoring it warns of forms the model almost never
        says (median label mass below :data:`LOW_LABEL_MASS`). Every warning of the run is kept
        in the results (``warnings``) and so in the report."""
        with kept_warnings() as run_warnings:
            data = self.load()
            first_ds = next(iter(data.values()))
            self._say_chosen(first_ds)
            y, classes = checked_labels(first_ds), first_ds.classes
            opened = {}
            # The default model's name is known once it is loaded, and the baseline may name it.
            names = list(self.models)
            if list(self.models.values()) == [None]:
                opened[names[0]] = self._open(None)
                names = [_short(opened[names[0]].model_name)]
            cal_names = list(self.calibrators)
            configs = [(tn, vn, mn) for mn in names for (tn, vn) in data]
            base = baseline_row(self._baseline(), {c: cal_names for c in configs})

            scores, cals, masses, about_models = {}, {}, {}, {}
            for key, mn in zip(self.models, names):
                backend = opened.pop(key, None) or self._open(self.models[key])
                check_k(backend, self.k)
                about_models[mn] = {"model": backend.model_name, "settings": backend.identity}
                for (tn, vn), ds in data.items():
                    config = (tn, vn, mn)
                    cals[config] = self._calibrators(classes, backend, ds)
                    what = f"with {backend.model_name}" if self.single else f"of {SEPARATOR.join(config)}"
                    say(f"scoring {len(ds.frame)} examples {what} (method={self.method}) ...")
                    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=self.method, k=self.k,
                              progress=self.progress)
                    scores[config] = s
                    mass = float(np.median(s.label_mass))
                    masses[SEPARATOR.join(config)] = f"{mass:.4g}"
                    if mass < LOW_LABEL_MASS:
                        warnings.warn(
                            f"{SEPARATOR.join(config) if not self.single else 'the label forms'}: median label mass "
                            f"{mass:.2g}, the model almost never says these forms after this template, so its "
                            "probabilities over the classes rest on a sliver of its belief; find forms it says with "
                            "calibkit forms (ck.search_forms), or give verbalizers=", LowLabelMassWarning, stacklevel=2)
                del backend
        info = {
            "data": first_ds.name, "sample": first_ds.selected, "method": self.method,
            "templates": {tn: data[(tn, next(iter(self.verbalizers)))].template.template for tn in self.templates},
            "verbalizers": {vn: data[(next(iter(self.templates)), vn)].verbalizer.mapping for vn in self.verbalizers},
            "models": about_models, "median label mass": masses,
        }
        alpha = None if self.single else (0.1 if self.alpha is None else self.alpha)
        say(f"fitting {len(cal_names)} calibrator(s) on {len(configs)} configuration(s), bootstrapping "
            f"{', '.join(self.metrics)} (n_boot={self.bootstrap}, metrics= to choose)"
            + ("" if self.single else f" and their differences from {base}, conformal sets at alpha={alpha:g}")
            + " ...")
        cmp = compare(scores, y, cals, classes=classes, factors=["template", "verbalizer", "model"], baseline=base,
                      calibration_fraction=self.calibration_fraction, seed=self.seed, n_boot=self.bootstrap,
                      metrics=self.metrics, alpha=alpha, differences=not self.single, info=info,
                      progress=self.progress)
        evaluations = cmp.evaluations
        if self.single:  # the calibration report of the one configuration, as it describes itself
            (tn, vn, mn), = configs
            ev = evaluations[SEPARATOR.join(configs[0])]
            ev.info = {"data": first_ds.name, "sample": first_ds.selected, "model": about_models[mn]["model"],
                       "model settings": about_models[mn]["settings"], "method": self.method,
                       "template": info["templates"][tn], "verbalizer": info["verbalizers"][vn],
                       "median label mass": masses[SEPARATOR.join(configs[0])], **ev.info}
            ev.run_warnings = run_warnings
        cmp.run_warnings = run_warnings
        return StudyResults(**{f.name: getattr(cmp, f.name) for f in fields(cmp)}, single=self.single,
                            scores={SEPARATOR.join(c): s for c, s in scores.items()})

    def _say_chosen(self, ds: Dataset) -> None:
        if list(self.templates.values()) == [None]:
            say(f"template {ds.template.template!r}: {self._whose(ds)} (templates= to give another)")
        if list(self.verbalizers.values()) == [None]:
            forms = "; ".join(f"{c!r}: {', '.join(map(repr, fs))}" for c, fs in zip(ds.classes, ds.verbalizer.forms))
            say(f"label forms {forms}: {self._whose(ds)} (verbalizers= to give others; calibkit forms searches "
                "for better ones)")

    @staticmethod
    def _whose(ds: Dataset) -> str:
        return f"the {ds.name} data set's own" if ds.source == "bundled" else "calibkit's default for this data, as none was given"

    def _baseline(self) -> str | tuple | None:
        b = self.baseline
        if isinstance(b, str):
            if SEPARATOR.strip() not in b:
                b = b.replace("/", SEPARATOR)
            b = _pinned(b, list(self.templates), list(self.verbalizers))
        return b

    def _open(self, model: Any) -> Backend:
        if isinstance(model, Backend):
            return model
        return open_backend(model, cache=self.cache, **self.backend_options)

    def _calibrators(self, classes: list, backend: Backend, ds: Dataset) -> dict:
        priors = sorted({part for n in self.calibrators for part in n.split("+")} & {"contextual", "domain"})
        if priors:
            say(f"scoring the {' and '.join(priors)} calibration's content-free inputs ...")
        texts = [str(v) for f in ds.fields for v in ds.frame[f]]
        return {n: make_calibrator(n, classes, backend=backend, template=ds.template, verbalizer=ds.verbalizer,
                                   texts=texts, method=self.method, k=self.k, progress=self.progress)
                for n in self.calibrators}

    def _two_classes(self, y: list) -> None:
        if len({repr(v) for v in y}) < 2:
            sel = self.selection
            raise ValueError(f"all {len(y)} examples are labelled {y[0]!r}, and calibrating needs two classes or more"
                             + (": limit= took the first rows; add shuffle=True or stratify=True"
                                if sel["limit"] and not (sel["shuffle"] or sel["stratify"]) else ""))


def _pinned(baseline: str, templates: list[str], verbalizers: list[str]) -> str:
    """``baseline`` with the first verbalizer added where it names a template alone among
    several verbalizers (the first template where it names a verbalizer alone among several
    templates): the first configuration that fits, as the default baseline is the first.

    >>> _pinned("plain", ["plain", "question"], ["words", "other"])
    'plain · words'
    >>> _pinned("question · temperature", ["plain", "question"], ["words", "other"])
    'question · words · temperature'
    >>> _pinned("other", ["t1", "t2"], ["words", "other"]), _pinned("plain", ["plain"], ["v1"])
    ('t1 · other', 'plain')
    """
    parts = [p.strip() for p in baseline.split(SEPARATOR.strip())]
    t_at = next((i for i, p in enumerate(parts) if p in templates), None)
    v_at = next((i for i, p in enumerate(parts) if p in verbalizers), None)
    if t_at is not None and v_at is None and len(verbalizers) > 1:
        parts.insert(t_at + 1, verbalizers[0])
    elif v_at is not None and t_at is None and len(templates) > 1:
        parts.insert(v_at, templates[0])
    else:
        return baseline
    return SEPARATOR.join(parts)


def _named(values: Any, param: str, prefix: str | None) -> dict[str, Any]:
    """A study's templates, verbalizers or models by name: a dict as given, a list named
    ``<prefix>1``, ``<prefix>2`` ... (models by their file or hub name), one value alone."""
    if values is None:
        return {"": None} if prefix is None else {f"{prefix}1": None}
    if isinstance(values, Mapping) and not (param == "verbalizers" and not any(
            isinstance(v, (Mapping, Verbalizer)) for v in values.values())):
        named = {str(k): v for k, v in values.items()}
    else:
        if isinstance(values, (str, PromptTemplate, Verbalizer, Backend, Mapping)):
            values = [values]
        values = list(values)
        if prefix is None:
            names = [_short(v.model_name if isinstance(v, Backend) else v) for v in values]
            names = _distinct(names)
        else:
            names = [f"{prefix}{i}" for i in range(1, len(values) + 1)]
        named = dict(zip(names, values))
    if not named:
        raise ValueError(f"{param}= is empty; give at least one, or None for the default")
    keys = [_identity(v) for v in named.values()]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"{param}= {twice[0]!r} is given twice; give each once")
    return named


def _identity(value: Any) -> str:
    if isinstance(value, PromptTemplate):
        return value.template
    if isinstance(value, Verbalizer):
        return json.dumps({str(k): v for k, v in value.mapping.items()}, sort_keys=True)
    if isinstance(value, Mapping):
        return json.dumps({str(k): v for k, v in value.items()}, sort_keys=True)
    if isinstance(value, Backend):
        return f"backend {id(value)}"
    return str(value)


def _short(model: Any) -> str:
    """A model's short name: a path's file name without .gguf, a hub name's last part."""
    short = Path(str(model).rstrip("/")).name
    return (short[: -len(".gguf")] if short.lower().endswith(".gguf") else short) or "model"


def _distinct(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        short, k = name, 2
        while short in out:
            short, k = f"{name}-{k}", k + 1
        out.append(short)
    return out


@contextlib.contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """Steps not logged while ``on`` (what a second loading of the same rows would say again)."""
    level = STEPS.level
    if on:
        STEPS.setLevel(logging.WARNING)
    try:
        yield
    finally:
        STEPS.setLevel(level)

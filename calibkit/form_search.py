"""Label words found, not guessed: :func:`search_forms` ranks candidate forms per class.

Which word stands for a class moves accuracy and calibration as much as the
template does. ``search_forms`` tries the user's own candidates and, where the
backend sees the whole vocabulary at the answer position (:class:`~calibkit.LocalModel`,
:class:`~calibkit.TransformersModel`), the model's own most telling tokens, and
ranks them by their cross-validated worth after a prior correction.

How it works
------------
1. **Proposals** (whole-vocabulary backends only:
   :class:`~calibkit.backends.base.VocabularyBackend`). One pass over the labelled
   examples reads every token's log-probability at the answer position, so every
   single-token candidate is scored at once; the mean per class is the backend's
   cached :meth:`~calibkit.backends.base.VocabularyBackend.mean_next_token_logprobs`,
   so a rerun of the same search asks the model nothing. For each class c, the mean
   log-probability of each token over c's examples, ``m_c``, gives a shortlist (the
   ``10 * n_proposed`` most likely tokens, so the words the model would say); the
   shortlist is ranked by the log-likelihood ratio ``m_c - mean of m_c' (c' != c)``
   (so the words that tell c apart), and the first ``n_proposed`` that belong to c
   more than to any other class, that are not blank, and that are one token exactly
   where they follow the prompt, are proposed.
2. **Scoring.** Every candidate, the user's and the proposed, is scored exactly on
   every example through :func:`~calibkit.score`, as any verbalizer would be (the
   response cache keeps the answers), so multi-token candidates and top-k APIs are
   scored the same way, and the numbers in the table are those ``score`` gives.
3. **Ranking.** A verbalizer takes one form per class. Starting from each class's
   first candidate (the user's, else the best proposal), one class at a time is
   changed to each of its candidates with the others held, and each choice is
   measured by the cross-validated NLL and accuracy of ``calibration`` (by default
   contextual calibration, a prior correction, then temperature scaling) fitted on
   the other folds; the best is kept, and the rounds go on until none changes. Each
   candidate's row in the table holds its worth beside the final choice for the
   other classes.

Where it differs from its anchors
----------------------------------
- PETAL (Schick, Schmid & Schütze 2020, "Automatically identifying words that can
  serve as labels for few-shot text classification") ranks words by a likelihood
  ratio over a fine-tuned PET model and gives several words per class. Here the
  model stays frozen, the ratio only proposes (within the tokens the model finds
  likely for the class), and the ranking is the calibrated held-out loss; one form
  per class.
- LM-BFF (Gao, Fisch & Chen 2021) proposes each class's top-k words by the
  model's likelihood on that class's examples, prunes the combinations by
  zero-shot accuracy, then fine-tunes on each survivor and keeps the best on a
  development set. Here nothing is fine-tuned; the combinations are searched one
  class at a time (coordinate ascent) rather than enumerated, and judged by
  cross-validated calibrated NLL (or accuracy) after a prior correction rather
  than by raw accuracy.
- The proposals see every example, so the winner's cross-validated score is
  somewhat optimistic (it was chosen on the same examples): judge it on held-out
  data, as ``benchmarks/bench_forms.py`` does on SST-2's dev split.

Example
-------
>>> import calibkit as ck
>>> from calibkit.datasets import load_dataset
>>> ds = load_dataset("sentiment")
>>> found = ck.search_forms(ds.X[:40], ds.y[:40], ds.template, ck.LocalModel(),
...                         candidates={"negative": [" negative", " bad"], "positive": [" positive", " good"]},
...                         n_proposed=2, progress=False)
>>> found.verbalizer
Verbalizer({'negative': [' negative'], 'positive': [' positive']})
>>> found.table.columns.tolist()
['class', 'form', 'source', 'tokens', 'mean_logprob', 'log_ratio', 'cv_nll', 'cv_accuracy', 'rank', 'chosen']
>>> len(found.table), sorted(set(found.table["source"]))
(8, ['given', 'model'])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import StratifiedKFold

from . import metrics as M
from .backends.base import Backend, VocabularyBackend, check_int
from .calibration import cross_val_calibrate
from .estimator import check_calibration, make_calibrator
from .label_scores import LabelScores
from .progress import progress_bar
from .scoring import CONTENT_FREE, default_backend, random_domain_texts, score
from .templates import PromptTemplate, Verbalizer, iter_examples

__all__ = ["FormSearch", "search_forms", "sees_vocabulary"]

_PROMPT = PromptTemplate("{prompt}")  # the prompts are written once, demonstrations and all


def _score_prompts(prompts: list[str], verbalizer: Verbalizer, backend: Backend,
                   progress: bool | None) -> LabelScores:
    """Every form of ``verbalizer`` after each written prompt, exactly (as :func:`~calibkit.score` does)."""
    return score([{"prompt": p} for p in prompts], _PROMPT, verbalizer, backend, method="exact",
                 progress=progress, check=False)


def sees_vocabulary(backend: Any) -> bool:
    """Whether ``backend`` reads the whole next-token distribution (so :func:`search_forms` can propose words):
    whether it is a :class:`~calibkit.backends.base.VocabularyBackend`.

    >>> sees_vocabulary(object())
    False
    """
    return isinstance(backend, VocabularyBackend)


@dataclass
class FormSearch:
    """What :func:`search_forms` found.

    ``verbalizer`` holds the chosen form of each class. ``table`` has one row per
    candidate tried: its ``class``, ``form``, ``source`` ("given" or "model"),
    ``tokens`` (how many it is after the first prompt), ``mean_logprob`` (its mean
    log-probability over its class's examples), ``log_ratio`` (that minus its mean over
    the other classes' examples, class by class), ``cv_nll`` and ``cv_accuracy`` (the
    cross-validated worth of the verbalizer with this candidate for its class and the
    chosen forms for the others), ``rank`` within its class (1 is best) and
    ``chosen``. ``scores`` are the exact log-probabilities of every candidate on every
    example (one column per candidate, named by its form); ``info`` the settings.
    """

    verbalizer: Verbalizer
    table: pd.DataFrame
    scores: LabelScores
    info: dict[str, Any]


def search_forms(
    examples: Any,
    y: Any,
    template: PromptTemplate | str,
    backend: Backend | None = None,
    *,
    candidates: Verbalizer | Mapping[Hashable, str | Sequence[str]] | None = None,
    n_proposed: int = 10,
    calibration: str | BaseEstimator = "contextual+temperature",
    cv: int = 5,
    select_by: str = "nll",
    max_rounds: int = 5,
    random_state: int | None = 0,
    progress: bool | None = None,
) -> FormSearch:
    """Rank candidate forms per class by cross-validated worth, and return the best verbalizer.

    Parameters
    ----------
    examples : strings, dicts, a pandas Series or a DataFrame, as for :func:`~calibkit.score`.
    y : the examples' labels.
    template : a PromptTemplate or a format string. Its demonstrations, if any, are
        written with each class's first candidate throughout.
    backend : any Backend (None: the embedded model). Backends that see the whole
        vocabulary (:func:`sees_vocabulary`) also propose words; others (a top-k API)
        rank the given candidates, scored exactly.
    candidates : ``{class: form or [forms]}`` or a Verbalizer: your own candidates, in
        class order (its classes are the classes). Needed for every class unless the
        backend proposes words; without it the classes are the sorted labels of ``y``.
    n_proposed : words the model proposes per class (0: only yours).
    calibration : a calibration name as for :func:`~calibkit.make_calibrator`
        ("contextual+temperature", "vector", ...; the prior corrections' inputs are
        scored with every candidate once) or an estimator, fitted on each fold.
    cv : folds of the stratified, shuffled (``random_state``) cross-validation.
    select_by : "nll" (ties by accuracy) or "accuracy" (ties by NLL).
    max_rounds : at most this many rounds of changing one class at a time.
    random_state : seed of the folds' shuffle.
    progress : progress bars, as for :func:`~calibkit.score`.

    Returns
    -------
    FormSearch
        ``.verbalizer``, ``.table`` (every candidate, best first within each class),
        ``.scores`` and ``.info``. See the module's doc for how it works and where it
        differs from PETAL and LM-BFF.
    """
    if isinstance(template, str):
        template = PromptTemplate(template)
    backend = default_backend(backend)
    rows = iter_examples(examples)
    labels = list(y.tolist()) if hasattr(y, "tolist") else list(y)
    if len(labels) != len(rows):
        raise ValueError(f"y has {len(labels)} labels for {len(rows)} examples; give one label per example")
    check_int("n_proposed", n_proposed, 0)
    check_int("cv", cv, 2)
    check_int("max_rounds", max_rounds, 1)
    if select_by not in ("nll", "accuracy"):
        raise ValueError(f"select_by must be 'nll' or 'accuracy' (got {select_by!r})")
    if isinstance(calibration, str):
        parts = check_calibration(calibration)
    elif hasattr(calibration, "fit") and hasattr(calibration, "predict_proba"):
        parts = []
    else:
        raise TypeError(f"calibration must be a name such as 'contextual+temperature' or an estimator "
                        f"(got {type(calibration).__name__})")
    vocabulary = sees_vocabulary(backend)
    given = _given(candidates, labels)
    classes = list(given)
    y_idx = _label_indices(labels, classes)
    counts = np.bincount(y_idx, minlength=len(classes))
    if counts.min() < cv:
        c = classes[int(counts.argmin())]
        raise ValueError(f"class {c!r} has {int(counts.min())} examples and cv={cv} folds need at least {cv} of "
                         "each class; give more examples or lower cv")
    lacking = [c for c, fs in given.items() if not fs]
    if lacking and not (vocabulary and n_proposed):
        why = (f"{backend.model_name} shows only its top tokens, so it cannot propose words"
               if not vocabulary else "n_proposed=0 proposes none")
        raise ValueError(f"candidates has no forms for class(es) {lacking}, and {why}: give candidates for every "
                         "class, e.g. candidates={" + ", ".join(f"{c!r}: [' word', ...]" for c in classes[:2]) + "}")
    demo_verbalizer = None
    if template.demonstrations:
        if lacking:
            raise ValueError("the template has demonstrations, written with each class's first candidate: give "
                             f"candidates for every class (none for {lacking})")
        demo_verbalizer = Verbalizer({c: fs[0] for c, fs in given.items()})
    prompts = template.format_many(rows, demo_verbalizer)

    proposed: dict[Hashable, list[str]] = {c: [] for c in classes}
    if vocabulary and n_proposed:
        proposed = _propose(backend, prompts, y_idx, classes, given, n_proposed,
                            ends_with_field=template.template.endswith("}"), progress=progress)
    pool: list[tuple[int, str, str]] = []  # (class index, form, source)
    for k, c in enumerate(classes):
        pool += [(k, f, "given") for f in given[c]] + [(k, f, "model") for f in proposed[c]]
    forms = [f for _, f, _ in pool]
    for f in sorted({f for f in forms if forms.count(f) > 1}):  # within a class, _given kept each once
        owners = [classes[k] for k, g, _ in pool if g == f]
        raise ValueError(f"candidates= gives the form {f!r} for {owners[0]!r} and {owners[1]!r}; each form belongs "
                         "to one class")

    pool_verbalizer = Verbalizer({f: f for f in forms})
    scores = _score_prompts(prompts, pool_verbalizer, backend, progress)
    X = scores.form_logprobs  # n × candidates, exact
    prior = _prior_scores(parts, template, rows, demo_verbalizer, pool_verbalizer, backend, progress)

    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    y_cls = [classes[k] for k in y_idx]
    memo: dict[tuple[int, ...], tuple[float, float]] = {}

    def worth(choice: tuple[int, ...]) -> tuple[float, float]:
        if choice not in memo:
            cols = list(choice)
            cal = (make_calibrator(calibration, classes, content_free=None if prior is None else prior[:, cols])
                   if isinstance(calibration, str) else clone(calibration))
            p = cross_val_calibrate(cal, X[:, cols], y_cls, cv=folds, classes=classes)
            memo[choice] = (M.nll(y_idx, p), M.accuracy(y_idx, p))
        return memo[choice]

    def key(choice: tuple[int, ...]) -> tuple[float, float]:
        nll, acc = worth(choice)
        return (nll, -acc) if select_by == "nll" else (-acc, nll)

    members = [[j for j, (k, _, _) in enumerate(pool) if k == c] for c in range(len(classes))]
    choice = tuple(m[0] for m in members)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(max_rounds):
            before = choice
            for c, cols in enumerate(members):
                choice = min((choice[:c] + (j,) + choice[c + 1:] for j in cols), key=key)
            if choice == before:
                break
        tokens = [None if t is None else len(t) for t in backend.form_tokens(prompts[0], forms)]
        table = _table(pool, tokens, X, y_idx, classes, choice, worth, key)
    if caught:
        # One line for the search, not one per fold of each candidate verbalizer tried.
        warnings.warn(f"{len(caught)} warnings from the cross-validated fits of {len(memo)} candidate verbalizers "
                      f"({cv} folds each), the first: {caught[0].message}", UserWarning, stacklevel=2)
    verbalizer = Verbalizer({c: pool[choice[k]][1] for k, c in enumerate(classes)})
    info = {"model": backend.model_name, "template": template.template, "n": len(rows),
            "calibration": calibration if isinstance(calibration, str) else repr(calibration),
            "cv": cv, "select_by": select_by, "random_state": random_state, "n_proposed": n_proposed,
            "proposed from the vocabulary": vocabulary and n_proposed > 0}
    return FormSearch(verbalizer=verbalizer, table=table, scores=scores, info=info)


def _given(candidates: Any, labels: list) -> dict[Hashable, list[str]]:
    """The user's candidates per class, in class order (classes from the candidates, else the labels)."""
    if candidates is None:
        try:
            classes = sorted(set(labels))
        except TypeError:
            classes = list(dict.fromkeys(labels))
        return {c: [] for c in classes}
    if isinstance(candidates, Verbalizer):
        return dict(candidates.mapping)
    if not isinstance(candidates, Mapping):
        raise TypeError("candidates must be a mapping {class: form or [forms]} or a Verbalizer "
                        f"(got {type(candidates).__name__})")
    out: dict[Hashable, list[str]] = {}
    for c, fs in candidates.items():
        forms = [fs] if isinstance(fs, str) else list(fs)
        if not all(isinstance(f, str) and f for f in forms):
            raise ValueError(f"candidates[{c!r}] must be non-empty strings (got {fs!r})")
        out[c] = list(dict.fromkeys(forms))
    if len(out) < 2:
        raise ValueError("candidates needs at least two classes")
    return out


def _label_indices(labels: list, classes: list) -> np.ndarray:
    index = {repr(c): k for k, c in enumerate(classes)}
    bad = sorted({repr(v) for v in labels} - set(index))
    if bad:
        raise ValueError(f"labels {', '.join(bad[:5])} are not among the classes {classes}; "
                         "give candidates for every class")
    return np.array([index[repr(v)] for v in labels], dtype=int)


def _propose(backend: VocabularyBackend, prompts: list[str], y_idx: np.ndarray, classes: list, given: dict,
             n_proposed: int, *, ends_with_field: bool, progress: bool | None) -> dict[Hashable, list[str]]:
    """Each class's proposals from one pass over the whole vocabulary (see the module's doc)."""
    K = len(classes)
    with progress_bar(len(prompts), progress, desc="whole vocabulary", unit="prompt") as bar:
        means = backend.mean_next_token_logprobs(prompts, y_idx.tolist(), progress=bar.update)
    ratio = np.empty_like(means)
    for k in range(K):
        ratio[k] = means[k] - np.delete(means, k, axis=0).mean(axis=0)
    taken = {f for fs in given.values() for f in fs}
    # A form must be this one token where it follows a prompt: the first prompt, or every
    # prompt where the template ends with a field (the seam then differs from prompt to prompt).
    seams = [(p, backend.token_ids(p, add_bos=True)) for p in (prompts if ends_with_field else prompts[:1])]

    def one_token(t: int, text: str) -> bool:
        return all(backend.token_ids(p + text, add_bos=True) == ids + [t] for p, ids in seams)

    out: dict[Hashable, list[str]] = {}
    for k, c in enumerate(classes):
        shortlist = np.argsort(-means[k], kind="stable")[: 10 * n_proposed]
        ranked = shortlist[np.argsort(-ratio[k][shortlist], kind="stable")]
        out[c] = []
        for t in ranked:
            if len(out[c]) == n_proposed:
                break
            if ratio[k][t] <= np.delete(ratio[:, t], k).max():
                continue  # it tells another class apart better
            text = backend.token_text(int(t))
            if not text.strip() or text.startswith("bytes:") or text in taken or not one_token(int(t), text):
                continue
            out[c].append(text)
            taken.add(text)
    return out


def _prior_scores(parts: list[str], template: PromptTemplate, rows: list, demo_verbalizer: Verbalizer | None,
                  pool_verbalizer: Verbalizer, backend: Backend, progress: bool | None) -> np.ndarray | None:
    """Every candidate's scores on the prior correction's inputs (content-free or in-domain strings), if any."""
    if "contextual" in parts:
        texts = list(CONTENT_FREE)
    elif "domain" in parts:
        texts = random_domain_texts([str(v) for r in rows for v in _values(r, template.fields)])
    else:
        return None
    prompts = template.format_many([{f: t for f in template.fields} for t in texts], demo_verbalizer)
    return _score_prompts(prompts, pool_verbalizer, backend, progress).form_logprobs


def _values(row: Any, fields: list[str]) -> list[Any]:
    return [row] if isinstance(row, str) else [row[f] for f in fields]


def _table(pool, tokens, X, y_idx, classes, choice, worth, key) -> pd.DataFrame:
    """One row per candidate, best first within each class."""
    records = []
    for j, (k, form, source) in enumerate(pool):
        mine = X[y_idx == k, j]
        others = [X[y_idx == c, j].mean() for c in range(len(classes)) if c != k]
        trial = choice[:k] + (j,) + choice[k + 1:]
        nll, acc = worth(trial)
        records.append({
            "class": classes[k], "form": form, "source": source,
            "tokens": tokens[j],
            "mean_logprob": float(mine.mean()),
            "log_ratio": float(mine.mean() - np.mean(others)),
            "cv_nll": nll, "cv_accuracy": acc, "_key": key(trial), "chosen": j == choice[k],
        })
    table = pd.DataFrame.from_records(records)
    order = sorted(range(len(table)), key=lambda i: (pool[i][0], table["_key"][i]))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(8, "rank", table.groupby("class", sort=False).cumcount() + 1)
    return table.drop(columns="_key")

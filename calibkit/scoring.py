"""Examples to label scores: the n×K matrix of log P(class | prompt).

This is the seam between talking to models and doing statistics. Everything to its
right (calibration, metrics, diagrams) works on the plain arrays of
:class:`LabelScores`.

Methods
-------
``"topk"``
    One request per example (``max_tokens=1, logprobs=k``). A form missing from the
    top-k is *censored*: its probability is at most the k-th largest top-k
    probability, and all missing forms together at most 1 - sum(top-k). The bound is
    kept (``censored`` mask), never replaced by zero. A form of several tokens is
    censored too: its first token's probability bounds it from above.
``"exact"``
    log P(form | prompt) for the whole form: natively in the embedded model (no top-k
    cap, the prompt's key/value cache reused across forms), by echo scoring of
    prompt + form over HTTP.
``"auto"``
    top-k first, exact only for the examples where a censored value could change the
    argmax or a form is several tokens. The embedded model goes straight to exact,
    which costs it no more than top-k.

Example
-------
>>> import calibkit as ck
>>> s = ck.score(["a gorgeous film", "a dull mess"], "Review: {text}\\nSentiment:",
...              {"negative": " negative", "positive": " positive"}, ck.LocalModel())
...                                                      # doctest: +SKIP
>>> s.predict()                                          # doctest: +SKIP
['positive', 'negative']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np

from .backends.base import Backend
from .templates import PromptTemplate, Verbalizer, check_traps, iter_examples, warn_traps

__all__ = ["LabelScores", "TokenizationError", "score"]

Method = Literal["auto", "topk", "exact"]


class TokenizationError(ValueError):
    """A form cannot be scored as asked, e.g. it merges with the end of the prompt."""


def _logsumexp_rows(a: np.ndarray, groups: Sequence[int], k: int) -> np.ndarray:
    out = np.full((a.shape[0], k), -np.inf)
    for j, g in enumerate(groups):
        out[:, g] = np.logaddexp(out[:, g], a[:, j])
    return out


@dataclass
class LabelScores:
    """Class log-probabilities of n examples, with what is known about their precision.

    Attributes
    ----------
    logprobs : (n, K) log P(class | prompt), the sum over the class's forms. Not
        renormalised: a small base model puts little mass on the label set (see
        ``label_mass``). Where ``censored`` is True the entry is an upper bound.
    censored : (n, K) bool, entries known only as an upper bound (top-k scoring).
    classes : the K class labels, in column order.
    label_mass : (n,) total probability on the label set, sum of exp(logprobs).
    form_logprobs : (n, F) the same for each form (``forms``, class ``form_class``).
    exact : (n,) bool, rows scored exactly (whole forms) rather than from the top-k.
    provenance : model, backend, method, k, requests made, cache hits, template.

    ``np.asarray(scores)`` is ``scores.logprobs``, so a LabelScores goes straight into
    a calibrator, whose identity map is the softmax over each row.
    """

    logprobs: np.ndarray
    censored: np.ndarray
    classes: list[Hashable]
    label_mass: np.ndarray
    form_logprobs: np.ndarray
    forms: list[str]
    form_class: list[int]
    exact: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = self.logprobs.shape
        if k != len(self.classes) or self.censored.shape != (n, k) or self.label_mass.shape != (n,):
            raise ValueError("LabelScores arrays do not agree in shape")

    def __len__(self) -> int:
        return self.logprobs.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.logprobs.astype(dtype) if dtype is not None else self.logprobs

    @property
    def shape(self) -> tuple[int, int]:
        return self.logprobs.shape  # type: ignore[return-value]

    def __getitem__(self, rows: Any) -> "LabelScores":
        """The scores of some rows (a slice, indices or a boolean mask)."""
        idx = np.arange(len(self))[rows]
        idx = np.atleast_1d(idx)
        return LabelScores(
            logprobs=self.logprobs[idx],
            censored=self.censored[idx],
            classes=list(self.classes),
            label_mass=self.label_mass[idx],
            form_logprobs=self.form_logprobs[idx],
            forms=list(self.forms),
            form_class=list(self.form_class),
            exact=self.exact[idx],
            provenance=dict(self.provenance),
        )

    @property
    def probs(self) -> np.ndarray:
        """P(class | prompt, label set): each row renormalised over the K classes."""
        z = self.logprobs - self.logprobs.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self) -> list[Hashable]:
        """The most probable class of each example (ties: the first class)."""
        return [self.classes[i] for i in np.argmax(self.logprobs, axis=1)]

    def to_frame(self) -> "Any":
        """A pandas DataFrame: one logprob and one censored column per class, label mass, prediction."""
        import pandas as pd

        data: dict[str, Any] = {}
        for k, c in enumerate(self.classes):
            data[f"logprob[{c}]"] = self.logprobs[:, k]
        for k, c in enumerate(self.classes):
            data[f"censored[{c}]"] = self.censored[:, k]
        data["label_mass"] = self.label_mass
        data["exact"] = self.exact
        data["prediction"] = self.predict()
        return pd.DataFrame(data)

    def __repr__(self) -> str:
        n, k = self.shape
        return (
            f"LabelScores(n={n}, classes={self.classes}, model={self.provenance.get('model')!r}, "
            f"method={self.provenance.get('method')!r}, censored={int(self.censored.sum())}, "
            f"median label mass={np.median(self.label_mass) if n else float('nan'):.3g})"
        )


def _progress_bar(total: int, enabled: bool | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    disable = (total < 64) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, unit="ex", leave=False)


def _topk(
    backend: Backend,
    prompts: list[str],
    first_tokens: list[str],
    multi: list[bool],
    form_class: list[int],
    n_classes: int,
    k: int,
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Form values/bounds (n, F), form censored (n, F), class values/bounds (n, K), class censored."""
    reqs = [backend.make_request(p, max_tokens=1, logprobs=k, temperature=0) for p in prompts]
    with _progress_bar(len(prompts), progress, f"top-{k}") as bar:
        resps = backend.complete(reqs, progress=bar.update)
    n, F = len(prompts), len(first_tokens)
    fv = np.empty((n, F))
    fc = np.zeros((n, F), dtype=bool)
    cv = np.empty((n, n_classes))
    cc = np.zeros((n, n_classes), dtype=bool)
    for i, resp in enumerate(resps):
        lp = resp.choices[0].logprobs
        if lp is None or not lp.top_logprobs or lp.top_logprobs[0] is None:
            raise ValueError(
                f"{backend.model_name} returned no top_logprobs for prompt {i}; the endpoint must "
                "support the logprobs field of the completions API"
            )
        top = lp.top_logprobs[0]
        values = sorted(top.values(), reverse=True)
        # The k-th largest bounds every token outside the top k (a (k+1)-th entry is
        # the sampled token, which is no more likely); fewer than k entries bound by the last.
        kth = values[min(k, len(values)) - 1]
        rest = max(0.0, 1.0 - sum(math.exp(v) for v in values[:k]))
        per_class_known = np.zeros(n_classes)
        per_class_first: list[set[str]] = [set() for _ in range(n_classes)]
        per_class_missing: list[set[str]] = [set() for _ in range(n_classes)]
        for j, (t, m, c) in enumerate(zip(first_tokens, multi, form_class)):
            if t in top:
                fv[i, j] = top[t]
                fc[i, j] = m
                if m:
                    per_class_first[c].add(t)
                else:
                    per_class_known[c] += math.exp(top[t])
            else:
                fv[i, j] = min(kth, math.log(rest) if rest > 0 else -np.inf)
                fc[i, j] = True
                per_class_missing[c].add(t)
        for c in range(n_classes):
            bound_first = sum(math.exp(top[t]) for t in per_class_first[c])
            bound_missing = min(len(per_class_missing[c]) * math.exp(kth), rest)
            total = per_class_known[c] + bound_first + bound_missing
            cv[i, c] = math.log(total) if total > 0 else -np.inf
            cc[i, c] = bool(per_class_first[c] or per_class_missing[c])
    return fv, fc, cv, cc


def _exact_http(backend: Backend, prompts: list[str], forms: list[str], progress: bool | None) -> np.ndarray:
    pairs = [(p, f) for p in prompts for f in forms]
    with _progress_bar(len(pairs), progress, "exact") as bar:
        spans = backend.echo_spans(pairs, progress=bar.update)
    out = np.empty((len(prompts), len(forms)))
    for idx, span in enumerate(spans):
        i, j = divmod(idx, len(forms))
        if span is None:
            raise TokenizationError(
                f"the form {forms[j]!r} merges with the end of prompt {i} into one token, so no "
                "log-probability belongs to it alone; end the template earlier or change the form"
            )
        if any(v is None for v in span[1]):
            raise ValueError(f"{backend.model_name} sent a null logprob inside the form {forms[j]!r}")
        out[i, j] = float(sum(span[1]))  # type: ignore[arg-type]
    return out


def score(
    examples: Any,
    template: PromptTemplate | str,
    verbalizer: Verbalizer | Mapping[Hashable, str | Sequence[str]],
    backend: Backend | None = None,
    method: Method = "auto",
    *,
    k: int | None = None,
    progress: bool | None = None,
    check: bool = True,
) -> LabelScores:
    """Score examples: log P(class | prompt) for every example and class.

    Parameters
    ----------
    examples : strings, dicts, a pandas Series, or a DataFrame whose columns fill
        the template's fields.
    template : a PromptTemplate, or a format string such as ``"Review: {text}\\nSentiment:"``.
    verbalizer : a Verbalizer, or a mapping ``{class: form or [forms]}``.
    backend : a :class:`~calibkit.Client` or :class:`~calibkit.LocalModel`
        (default: the embedded model).
    method : ``"auto"``, ``"topk"`` or ``"exact"`` (see the module's doc).
    k : top-k for ``"topk"``/``"auto"`` (default: the endpoint's cap, else 20).
    progress : a tqdm bar; None shows it for 64 examples or more.
    check : look for tokenization traps and warn (TokenizationWarning).

    Returns
    -------
    LabelScores
    """
    if method not in ("auto", "topk", "exact"):
        raise ValueError(f"method must be 'auto', 'topk' or 'exact' (got {method!r})")
    if isinstance(template, str):
        template = PromptTemplate(template)
    if not isinstance(verbalizer, Verbalizer):
        verbalizer = Verbalizer(verbalizer)
    if backend is None:
        from .backends.llamacpp import LocalModel

        backend = LocalModel()
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a calibkit Client or LocalModel (got {type(backend).__name__})")
    rows = iter_examples(examples)
    prompts = template.format_many(rows, verbalizer)
    forms, form_class = verbalizer.all_forms, verbalizer.form_class
    K, F, n = len(verbalizer.classes), len(forms), len(prompts)
    requests_before, hits_before = backend.requests_made, backend.cache_hits

    if check and n:
        warn_traps(check_traps(template, verbalizer, backend, example=rows[0]))

    fv = np.empty((n, F))
    fc = np.zeros((n, F), dtype=bool)
    exact = np.zeros(n, dtype=bool)
    cv = np.empty((n, K))  # class values from top-k, bounds where censored
    k_used = None
    if n == 0:
        pass
    elif getattr(backend, "native_exact", False) and method != "topk":
        ids = [backend.token_ids(f) for f in forms]  # type: ignore[attr-defined]
        with _progress_bar(n, progress, "exact") as bar:
            fv = backend.form_logprobs(prompts, ids, progress=bar.update)  # type: ignore[attr-defined]
        exact[:] = True
    elif method == "exact":
        fv = _exact_http(backend, prompts, forms, progress)
        exact[:] = True
    else:
        k_used = k if k is not None else (backend.logprobs_cap or 20)
        toks = backend.form_tokens(prompts[0], forms)
        for f, t in zip(forms, toks):
            if t is None:
                raise TokenizationError(
                    f"the form {f!r} merges with the end of the prompt into one token; top-k "
                    "scoring cannot see it. End the template earlier or change the form"
                )
        first = [t[0] for t in toks]  # type: ignore[index]
        multi = [len(t) > 1 for t in toks]  # type: ignore[arg-type]
        shared = len({(t, c) for t, c in zip(first, form_class)}) > len(set(first))
        if method == "auto" and (any(multi) or shared):
            # Top-k cannot settle any example here: go straight to exact.
            fv = _exact_http(backend, prompts, forms, progress)
            exact[:] = True
        else:
            fv, fc, cv, cc = _topk(backend, prompts, first, multi, form_class, K, k_used, progress)
        if method == "auto" and not exact.all():
            known = np.where(cc, -np.inf, cv)
            could_flip = (cc & (cv >= known.max(axis=1)[:, None])).any(axis=1)
            if could_flip.any():
                sel = np.flatnonzero(could_flip)
                fv[sel] = _exact_http(backend, [prompts[i] for i in sel], forms, progress)
                fc[sel] = False
                exact[sel] = True

    logprobs = _logsumexp_rows(fv, form_class, K)
    censored = np.zeros((n, K), dtype=bool)
    for j, c in enumerate(form_class):
        censored[:, c] |= fc[:, j]
    if n and not exact.all():
        # Class bounds from top-k account for the joint mass left outside it.
        logprobs[~exact] = np.where(censored[~exact], cv[~exact], logprobs[~exact])
    label_mass = np.exp(logprobs).sum(axis=1) if n else np.zeros(0)
    provenance = {
        **backend.identity,
        "method": method,
        "exact_rows": int(exact.sum()),
        "k": k_used,
        "requests": backend.requests_made - requests_before,
        "cache_hits": backend.cache_hits - hits_before,
        "template": repr(template),
        "verbalizer": repr(verbalizer),
    }
    return LabelScores(
        logprobs=logprobs,
        censored=censored,
        classes=list(verbalizer.classes),
        label_mass=label_mass,
        form_logprobs=fv,
        forms=list(forms),
        form_class=list(form_class),
        exact=exact,
        provenance=provenance,
    )

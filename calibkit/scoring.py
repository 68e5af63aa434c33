"""Examples to label scores: the n×K matrix of log P(class | prompt).

This is the seam between talking to models and doing statistics. Everything to its
right (calibration, metrics, diagrams) works on the plain arrays of
:class:`LabelScores`.

Methods
-------
Scoring asks a backend only the two questions of the model seam
(:mod:`calibkit.backends.base`): the top-k next tokens after a prompt, and the
log-probabilities of a continuation's tokens. It never asks which backend it holds.

``"topk"``
    One top-k question per example. A form missing from the
    top-k is *censored*: its probability is at most the k-th largest top-k
    probability, and all missing forms together at most 1 - sum(top-k). The bound is
    kept (``censored`` mask), never replaced by zero. A form of several tokens is
    censored too: its first token's probability bounds it from above.
``"exact"``
    log P(form | prompt) for the whole form, multi-token forms too: one continuation
    question per example and form.
``"auto"``
    top-k first, exact only for the examples where a censored value could change the
    argmax or a form is several tokens. A backend whose continuation question costs no
    more than its top-k one (``exact_is_cheap``, the embedded model) is asked for
    exact log-probabilities straight away.

Forms that merge with the prompt
---------------------------------
One rule holds for every method and backend: a form is scored only where the prompt
and the form tokenize as the prompt's own tokens followed by tokens that cover the form
exactly (:meth:`~calibkit.Backend.continuation_logprobs`). Then those tokens are
scored, even where the form alone would tokenize otherwise: that is not a trap.
Otherwise (``"Sentiment: pos"`` + ``"itive"`` becomes ``" positive"``) no number
belongs to the form alone, and :func:`score` raises :class:`TokenizationError`
naming the form and the prompt, never a number for some other text. The fix: end the
template with no trailing text that merges with the forms (no trailing space, no
part of a word), or start the forms with a space. Top-k scoring checks this for the
first prompt; where the template ends with a field (the example's own text meets the
form) it checks every prompt, which costs a continuation question per prompt and form.

The content-free inputs of the prior corrections are scored here too
(:func:`content_free_scores`, :func:`domain_context_scores`), so that the
calibrators get plain scores and import nothing from the model half.

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
import string
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np

from .backends.base import Backend
from .label_scores import LabelScores
from .progress import progress_bar
from .templates import PromptTemplate, Verbalizer, check_traps, iter_examples, warn_traps

__all__ = [
    "CONTENT_FREE",
    "TokenizationError",
    "content_free_scores",
    "domain_context_scores",
    "random_domain_texts",
    "score",
]

#: The content-free inputs of contextual calibration (Zhao et al. 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")

Method = Literal["auto", "topk", "exact"]


class TokenizationError(ValueError):
    """A form cannot be scored as asked, e.g. it merges with the end of the prompt.

    >>> raise _merge_error(" pos", "itive")
    Traceback (most recent call last):
    ...
    calibkit.scoring.TokenizationError: the form 'itive' merges with the end of the prompt ' pos' into ...
    """


def _merge_error(prompt: str, form: str, which: str = "the prompt", template: PromptTemplate | None = None,
                 verbalizer: Verbalizer | None = None) -> TokenizationError:
    """The error for a form that merges with the end of ``prompt``: names both and says the fix.

    Where the template ends in a space and the form starts with one (the "trailing-space"
    trap), that is the cause, and the error names the template (``template=``), which is
    what to change.
    """
    if template is not None and template.template[-1:].isspace() and form[:1].isspace():
        spaced = [f for f in (verbalizer.all_forms if verbalizer else [form]) if f[:1].isspace()]
        space = "space" if template.template.endswith(" ") else "whitespace"
        ends = "a space" if space == "space" else "whitespace"
        return TokenizationError(
            f"template={template.template!r} ends in {ends} and the forms {spaced} start with a space, so the "
            f"form {form!r} merges with the template's end into one token and no log-probability belongs to the "
            f"form alone; drop the trailing {space}: template={template.template.rstrip()!r}"
        )
    tail = prompt if len(prompt) <= 40 else "..." + prompt[-40:]
    spaced = " " + form.lstrip()
    return TokenizationError(
        f"the form {form!r} merges with the end of {which} {tail!r} into one token, so no "
        f"log-probability belongs to the form alone and none is returned; end the template with no "
        f"trailing text that merges with the forms (no trailing space, no part of a word), or start "
        f"the forms with a space (e.g. {spaced!r})"
    )


def _logsumexp_rows(a: np.ndarray, groups: Sequence[int], k: int) -> np.ndarray:
    out = np.full((a.shape[0], k), -np.inf)
    for j, g in enumerate(groups):
        out[:, g] = np.logaddexp(out[:, g], a[:, j])
    return out


def _topk(
    answers: list[dict[str, float]],
    first_tokens: list[str],
    multi: list[bool],
    form_class: list[int],
    n_classes: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Form values/bounds (n, F), form censored (n, F), class values/bounds (n, K), class censored."""
    n, F = len(answers), len(first_tokens)
    fv = np.empty((n, F))
    fc = np.zeros((n, F), dtype=bool)
    cv = np.empty((n, n_classes))
    cc = np.zeros((n, n_classes), dtype=bool)
    for i, top in enumerate(answers):
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


def _exact(backend: Backend, prompts: list[str], forms: list[str], progress: bool | None,
           template: PromptTemplate | None = None, verbalizer: Verbalizer | None = None) -> np.ndarray:
    pairs = [(p, f) for p in prompts for f in forms]
    with progress_bar(len(pairs), progress, desc="exact", unit="form") as bar:
        answers = backend.continuation_logprobs(pairs, progress=bar.update)
    out = np.empty((len(prompts), len(forms)))
    for idx, ans in enumerate(answers):
        i, j = divmod(idx, len(forms))
        if ans is None:
            raise _merge_error(prompts[i], forms[j], f"prompt {i}", template, verbalizer)
        out[i, j] = ans.logprob
    return out


def _check_form_tokens(prompt: str, forms: list[str], toks: list[list[str] | None], which: str,
                       template: PromptTemplate | None = None, verbalizer: Verbalizer | None = None) -> list[list[str]]:
    out = []
    for f, t in zip(forms, toks):
        if t is None:
            raise _merge_error(prompt, f, which, template, verbalizer)
        out.append(t)
    return out


def _ends_with_field(template: PromptTemplate) -> bool:
    """Whether the example's own text comes last, right where the form follows."""
    parts = list(string.Formatter().parse(template.template))
    return bool(parts) and parts[-1][1] is not None


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
    backend : any :class:`~calibkit.Backend`: a :class:`~calibkit.Client`, a
        :class:`~calibkit.LocalModel` (the default, the embedded model), your own.
    method : ``"auto"``, ``"topk"`` or ``"exact"`` (see the module's doc).
    k : top-k for ``"topk"``/``"auto"`` (default: the endpoint's cap, else 20).
    progress : a tqdm bar on stderr (see :mod:`calibkit.progress`); None shows it once a run has lasted two seconds,
        False never.
    check : warn (:class:`~calibkit.TokenizationWarning`) of the tokenization traps
        that distort ``method`` (see :func:`~calibkit.check_traps`): a form of several
        tokens only with ``"topk"``, which sees its first token alone.

    A form that merges with the end of a prompt is an error with every method and
    backend, never a warning (see "Forms that merge with the prompt" in the module's
    doc): :class:`TokenizationError` names the form and the prompt.

    >>> import calibkit as ck
    >>> ck.score(["a great film"], "Review: {text}\\nSentiment: pos", {"pos": "itive", "neg": "ition"},
    ...          ck.LocalModel())                                          # doctest: +SKIP
    Traceback (most recent call last):
    ...
    calibkit.scoring.TokenizationError: the form 'itive' merges with the end of prompt 0 '...Sentiment: pos' ...

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
    backend = default_backend(backend)
    rows = iter_examples(examples)
    prompts = template.format_many(rows, verbalizer)
    forms, form_class = verbalizer.all_forms, verbalizer.form_class
    K, F, n = len(verbalizer.classes), len(forms), len(prompts)
    requests_before, hits_before = backend.requests_made, backend.cache_hits

    exact_first = method == "exact" or (method == "auto" and backend.exact_is_cheap)
    # The forms' tokens after the first prompt, asked once for the trap check and top-k.
    # Exact scoring needs none: the traps that only tokens show do not distort it, and
    # a form that merges with the prompt is an error of the exact question itself.
    raw_tokens = backend.form_tokens(prompts[0], forms) if n and not exact_first else None
    if raw_tokens is not None:
        # A merge is an error, whatever the method and backend (see the module's doc), before any warning.
        _check_form_tokens(prompts[0], forms, raw_tokens, "prompt 0", template, verbalizer)
        if _ends_with_field(template):  # the seam differs from example to example
            for i, p in enumerate(prompts[1:], 1):
                _check_form_tokens(p, forms, backend.form_tokens(p, forms), f"prompt {i}", template, verbalizer)
    if check and n:
        traps = check_traps(template, verbalizer, method=method, tokens=raw_tokens)
        if raw_tokens is None and any(t.kind == "trailing-space" for t in traps):
            # Exact scoring meets a merge only once it asks; the error is said before (instead of) the warning.
            _check_form_tokens(prompts[0], forms, backend.form_tokens(prompts[0], forms), "prompt 0", template,
                               verbalizer)
        warn_traps(traps)

    fv = np.empty((n, F))
    fc = np.zeros((n, F), dtype=bool)
    exact = np.zeros(n, dtype=bool)
    cv = np.empty((n, K))  # class values from top-k, bounds where censored
    k_used = None
    if n == 0:
        pass
    elif exact_first:
        fv = _exact(backend, prompts, forms, progress, template, verbalizer)
        exact[:] = True
    else:
        k_used = k if k is not None else (backend.logprobs_cap or 20)
        toks = _check_form_tokens(prompts[0], forms, raw_tokens, "prompt 0")  # type: ignore[arg-type]
        first = [t[0] for t in toks]
        multi = [len(t) > 1 for t in toks]
        shared = len({(t, c) for t, c in zip(first, form_class)}) > len(set(first))
        if method == "auto" and (any(multi) or shared):
            # Top-k cannot settle any example here: go straight to exact.
            fv = _exact(backend, prompts, forms, progress, template, verbalizer)
            exact[:] = True
        else:
            with progress_bar(n, progress, desc=f"top-{k_used}", unit="prompt") as bar:
                answers = backend.top_k(prompts, k_used, progress=bar.update)
            fv, fc, cv, cc = _topk(answers, first, multi, form_class, K, k_used)
        if method == "auto" and not exact.all():
            known = np.where(cc, -np.inf, cv)
            could_flip = (cc & (cv >= known.max(axis=1)[:, None])).any(axis=1)
            if could_flip.any():
                sel = np.flatnonzero(could_flip)
                fv[sel] = _exact(backend, [prompts[i] for i in sel], forms, progress, template, verbalizer)
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


def default_backend(backend: Backend | None) -> Backend:
    """``backend`` checked, or the embedded model where it is None."""
    if backend is None:
        from .backends.llamacpp import LocalModel

        return LocalModel()
    if not isinstance(backend, Backend):
        raise TypeError(
            f"backend must be a calibkit Backend such as Client or LocalModel (got {type(backend).__name__})"
        )
    return backend


def _fill(template: PromptTemplate, text: str) -> dict[str, str]:
    """One example filling every field of the template with ``text``."""
    return {name: text for name in template.fields}


def content_free_scores(
    template: PromptTemplate | str,
    verbalizer: Verbalizer | Mapping[Hashable, str | Sequence[str]],
    backend: Backend | None = None,
    *,
    texts: Sequence[str] = CONTENT_FREE,
    method: Method = "auto",
    k: int | None = None,
    progress: bool | None = None,
) -> LabelScores:
    """Scores of content-free inputs, for :class:`~calibkit.ContextualCalibration`.

    Every field of the template is filled with each of ``texts`` ("N/A", "", "[MASK]"
    by default); few-shot demonstrations in the template stay as they are. ``method``,
    ``k`` and ``progress`` as for :func:`score`: score them as the examples they correct.

    >>> import calibkit as ck
    >>> cf = ck.content_free_scores("Review: {text}\\nSentiment:",
    ...                             {"neg": " negative", "pos": " positive"})       # doctest: +SKIP
    >>> ck.ContextualCalibration(content_free=cf).fit(scores)                     # doctest: +SKIP
    """
    if isinstance(template, str):
        template = PromptTemplate(template)
    if isinstance(texts, str) or not len(texts):
        raise ValueError("texts must be a non-empty list of content-free strings, e.g. ['N/A', '', '[MASK]']")
    return score(
        [_fill(template, t) for t in texts], template, verbalizer, backend, method, k=k, progress=progress, check=False
    )


def random_domain_texts(
    texts: Sequence[str], *, n_samples: int = 20, length: int | None = None, seed: int | None = 0
) -> list[str]:
    """Random strings of in-domain words (Fei et al. 2023).

    Words are drawn with replacement from all whitespace-separated words of
    ``texts`` (so frequent words are drawn more often); each string has
    ``length`` words, by default the mean word count of ``texts``.

    >>> random_domain_texts(["a great film", "a dull plot"], n_samples=2, seed=0)
    ['plot a a', 'great great a']
    """
    words = [w for t in texts for w in str(t).split()]
    if not words:
        raise ValueError("texts has no words to sample from; pass in-domain texts (unlabelled is fine).")
    if length is None:
        length = max(1, round(len(words) / len(texts)))
    if length < 1 or n_samples < 1:
        raise ValueError(f"length={length} and n_samples={n_samples} must be positive.")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(words), size=(n_samples, length))
    return [" ".join(words[i] for i in row) for row in draws]


def domain_context_scores(
    template: PromptTemplate | str,
    verbalizer: Verbalizer | Mapping[Hashable, str | Sequence[str]],
    backend: Backend | None = None,
    *,
    texts: Sequence[str],
    n_samples: int = 20,
    length: int | None = None,
    seed: int | None = 0,
    method: Method = "auto",
    k: int | None = None,
    progress: bool | None = None,
) -> LabelScores:
    """Scores of ``n_samples`` random strings of in-domain words, for :class:`~calibkit.DomainContextCalibration`.

    The strings are :func:`random_domain_texts`; ``method``, ``k`` and ``progress`` as
    for :func:`score`.

    >>> import calibkit as ck
    >>> dc = ck.domain_context_scores("Review: {text}\\nSentiment:", {"neg": " negative", "pos": " positive"},
    ...                               texts=train_texts)                           # doctest: +SKIP
    """
    strings = random_domain_texts(texts, n_samples=n_samples, length=length, seed=seed)
    return content_free_scores(template, verbalizer, backend, texts=strings, method=method, k=k, progress=progress)

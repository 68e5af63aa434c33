"""The model seam: a backend answers two questions, and one cache sits in front of every backend.

The questions are about meaning, not wire requests (lm-evaluation-harness's
``LM.loglikelihood`` idea):

- :meth:`Backend.top_k`: for each prompt, the k most likely next tokens and their
  log-probabilities (a backend may cap k: :attr:`Backend.logprobs_cap`);
- :meth:`Backend.continuation_logprobs`: for each (prompt, continuation), the
  continuation's tokens and the log-probability of each given the prompt, or None
  where the continuation merges with the end of the prompt into one token.

The seam rule, the same for every backend: prompt + continuation is scored only where
it tokenizes as the prompt's own tokens followed by tokens that cover the continuation
exactly; those tokens are scored, even where the continuation alone would tokenize
otherwise. Anywhere else (the continuation's first characters merge into the prompt's
last token, or change how the prompt tokenizes) the answer is None, never numbers for
some other text; :func:`~calibkit.score` turns None into a
:class:`~calibkit.TokenizationError` that names the form and the prompt.

A backend is a class with an :attr:`~Backend.identity` and the two methods that
answer these, ``_answer_top_k(prompts, k, *, keep=None)`` and
``_answer_continuations(pairs, *, keep=None)``. Everything else is here: the answers
already in the cache are looked up, the rest are asked in batches of
:attr:`~Backend.batch_size`, and each batch is written to the cache as it finishes,
so an interrupted run resumes where it stopped. ``keep`` is a callback a backend may
call with answers as they come (``{position in the list: answer}``), which writes
them to the cache at once; a backend that does so for every answer
(:attr:`~Backend.streams_answers`: the HTTP client, :class:`~calibkit.RayPool`) is
handed windows of :attr:`~Backend.window_batches` batches instead: no batch waits
for the slowest answer of the one before, and a killed run still loses at most the
answers in progress. The cache key is the backend's identity (model, endpoint, the
settings that change numbers) and the question, never an API key.

A backend that reads the whole next-token distribution (:class:`VocabularyBackend`:
the embedded llama.cpp model, transformers) answers a third question,
:meth:`VocabularyBackend.mean_next_token_logprobs`, behind the same cache.

Example: a backend that knows one fixed next-token distribution.

>>> import math
>>> class Fixed(Backend):
...     identity = {"backend": "fixed", "model": "coin"}
...     def _answer_top_k(self, prompts, k, *, keep=None):
...         return [{" heads": math.log(0.6), " tails": math.log(0.4)} for _ in prompts]
...     def _answer_continuations(self, pairs, *, keep=None):
...         lp = {" heads": math.log(0.6), " tails": math.log(0.4)}
...         return [Continuation((c,), (lp[c],)) for _, c in pairs]
>>> m = Fixed(cache=False)
>>> round(m.continuation_logprobs([("Toss:", " tails")])[0].logprob, 4)
-0.9163
>>> m.form_tokens("Toss:", [" heads"])
[[' heads']]
"""

from __future__ import annotations

import base64
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Hashable, Sequence, TypeVar

import numpy as np

from ..api import APIError
from ..cache import ResponseCache, resolve_cache

__all__ = ["MISSING", "Backend", "Continuation", "IncompleteAnswers", "Keep", "SharedOnCopy", "TopK",
           "VocabularyBackend", "check_int"]

#: Where :class:`IncompleteAnswers` has no answer for a question.
class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:  # pickled by name: an unpickled MISSING is MISSING (Ray's actors send it back)
        return "MISSING"


MISSING: Any = _Missing()


class IncompleteAnswers(Exception):
    """A batch that failed part way: the answers that came (``MISSING`` where none did) and why.

    A backend's ``_answer_*`` method raises it so that what was answered is cached before
    the error (``cause``) reaches the user: paid work is never asked for twice.
    """

    def __init__(self, answers: list[Any], cause: BaseException, failed: Sequence[int] = ()):
        super().__init__(str(cause))
        self.answers = answers
        self.cause = cause
        #: positions of the questions whose request failed (the others MISSING were not sent)
        self.failed = list(failed)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, not from ``args`` (its message): RayPool's actors send it back.
        return type(self), (self.answers, self.cause, self.failed)


#: The answer to the top-k question for one prompt: token string -> log-probability,
#: most likely first. A server may add the sampled token as a (k+1)-th entry.
TopK = dict[str, float]

#: What a backend's ``_answer_*`` methods call with answers as they come: {position in the list: answer}.
Keep = Callable[[dict[int, Any]], None]

Q = TypeVar("Q", bound=Hashable)
A = TypeVar("A")


def check_int(name: str, value: Any, lo: int) -> None:
    """A setting that must be a whole number of at least ``lo`` (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r})")


@dataclass(frozen=True)
class Continuation:
    """A continuation's tokens after the prompt and the log-probability of each, given what precedes it."""

    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.tokens or len(self.tokens) != len(self.logprobs):
            raise ValueError(
                f"a continuation needs one log-probability per token (got {len(self.tokens)} tokens, "
                f"{len(self.logprobs)} log-probabilities)"
            )
        if any(lp is None or math.isnan(lp) for lp in self.logprobs):
            raise ValueError(f"every token of a continuation needs a log-probability (got {list(self.logprobs)})")

    @property
    def logprob(self) -> float:
        """log P(continuation | prompt): the sum over its tokens, left to right."""
        return float(sum(self.logprobs))

    def to_json(self) -> dict[str, list]:
        return {"tokens": list(self.tokens), "logprobs": list(self.logprobs)}

    @classmethod
    def from_json(cls, d: dict[str, list]) -> "Continuation":
        return cls(tuple(d["tokens"]), tuple(d["logprobs"]))


class Backend(ABC):
    """What scoring asks of a model; subclasses answer two questions (see the module's doc).

    Subclasses implement :attr:`identity`, :meth:`_answer_top_k` and
    :meth:`_answer_continuations`, and may set :attr:`logprobs_cap`,
    :attr:`exact_is_cheap` and :attr:`batch_size`.

    Parameters
    ----------
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.

    Backends are context managers: ``with ck.Client(...) as api:`` closes the
    connections and the cache file at the end.
    """

    #: The largest k the top-k question takes; None: no cap.
    logprobs_cap: int | None = None
    #: True where the continuation question costs no more than the top-k one (a model
    #: in-process holds the whole next-token distribution): ``method="auto"`` then asks
    #: for exact log-probabilities straight away instead of top-k first.
    exact_is_cheap: bool = False
    #: Questions handed to the subclass at once; each batch is cached as it finishes.
    batch_size: int = 16
    #: True where ``_answer_top_k`` and ``_answer_continuations`` call their ``keep`` with
    #: every answer as it comes (each position once), so that it is cached at once; they
    #: may still return (or put in :class:`IncompleteAnswers`) every answer, those already
    #: kept included. Such a backend bounds what it has asked and not yet kept (the HTTP
    #: client: at most ``batch_size`` questions) and is handed ``window_batches`` batches
    #: at a time; any other is handed one batch, cached when it returns.
    streams_answers: bool = False
    #: Batches in one window handed to a backend that streams its answers.
    window_batches: int = 128

    def __init__(self, cache: ResponseCache | str | bool | None = None):
        self._cache_arg = cache
        self.cache = resolve_cache(cache)
        #: Questions the model answered (cache hits not counted), by this object.
        self.requests_made = 0
        #: Questions answered from the cache.
        self.cache_hits = 0

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes answers from this backend differ: model, endpoint, settings that change numbers; never a key."""

    @property
    def model_name(self) -> str:
        return str(self.identity.get("model"))

    # -- what a backend implements ------------------------------------------------------
    @abstractmethod
    def _answer_top_k(self, prompts: list[str], k: int, *, keep: Keep | None = None) -> list[TopK]:
        """The top-k next tokens after each prompt, in order; ``k`` is within :attr:`logprobs_cap`.

        ``keep``: see the module's doc and :attr:`streams_answers`.
        """

    @abstractmethod
    def _answer_continuations(self, pairs: list[tuple[str, str]], *,
                              keep: Keep | None = None) -> list[Continuation | None]:
        """Each continuation's tokens and logprobs given its prompt; None where it merges with the prompt.

        ``keep``: see the module's doc and :attr:`streams_answers`.
        """

    # -- the two questions, behind the cache --------------------------------------------------
    def top_k(
        self, prompts: Sequence[str], k: int, *, progress: Callable[[int], None] | None = None
    ) -> list[TopK]:
        """The ``k`` most likely next tokens after each prompt, with their log-probabilities."""
        check_int("k", k, 1)
        if self.logprobs_cap is not None and k > self.logprobs_cap:
            raise ValueError(
                f"k={k} is more than {self.model_name}'s endpoint returns (its top-k cap is "
                f"{self.logprobs_cap}); pass k <= {self.logprobs_cap}"
            )
        prompts = _strings(prompts, "prompts")
        return self._ask(
            "top_k",
            prompts,
            lambda p: {"prompt": p, "k": k},
            lambda batch, keep: self._answer_top_k(batch, k, keep=keep),
            encode=lambda a: [[t, v] for t, v in a.items()],
            decode=lambda v: {t: lp for t, lp in v},
            progress=progress,
        )

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str]], *, progress: Callable[[int], None] | None = None
    ) -> list[Continuation | None]:
        """For each (prompt, continuation): the continuation's tokens and the logprob of each given the prompt.

        None where the continuation merges with the end of the prompt into one token, so
        that no log-probability belongs to it alone: the seam rule of the module's doc
        (prompt + continuation must tokenize as the prompt's own tokens followed by
        tokens that cover the continuation exactly).

        >>> m = LocalModel(cache=False)                                  # doctest: +SKIP
        >>> m.continuation_logprobs([("Sentiment: pos", "itive"), ("Sentiment:", " positive")])  # doctest: +SKIP
        [None, Continuation(tokens=(' positive',), logprobs=(-5.2...,))]
        """
        pairs = [(p, c) for p, c in pairs]
        _strings([p for p, _ in pairs], "prompts")
        for _, c in pairs:
            if not isinstance(c, str) or not c:
                raise ValueError(f"a continuation must be a non-empty string (got {c!r})")
        return self._ask(
            "continuation",
            pairs,
            lambda pc: {"prompt": pc[0], "continuation": pc[1]},
            lambda batch, keep: self._answer_continuations(batch, keep=keep),
            encode=lambda a: None if a is None else a.to_json(),
            decode=lambda v: None if v is None else Continuation.from_json(v),
            progress=progress,
        )

    def form_tokens(self, prompt: str, forms: Sequence[str]) -> list[list[str] | None]:
        """The tokens each form becomes right after ``prompt``; None where it merges with the prompt (the seam rule).

        >>> api.form_tokens("Sentiment:", [" positive", "itive"])      # doctest: +SKIP
        [[' positive'], None]
        """
        return [None if c is None else list(c.tokens) for c in self.continuation_logprobs([(prompt, f) for f in forms])]

    def _ask(
        self,
        question: str,
        items: list[Q],
        key_of: Callable[[Q], dict[str, Any]],
        answer: Callable[[list[Q], Keep], list[A]],
        *,
        encode: Callable[[A], Any],
        decode: Callable[[Any], A],
        progress: Callable[[int], None] | None,
    ) -> list[A]:
        out: dict[Q, A] = {}
        unique = list(dict.fromkeys(items))  # a question asked twice in one call is answered once
        keys: dict[Q, str] = {}
        if self.cache is not None:
            ident = self.identity
            keys = {q: self.cache.key(ident, {"question": question, **key_of(q)}) for q in unique}
            hits = self.cache.get_many(keys.values())
            for q in unique:
                if keys[q] in hits:
                    out[q] = decode(hits[keys[q]])
            self.cache_hits += len(out)
            if progress is not None and out:
                progress(len(out))
        todo = [q for q in unique if q not in out]

        def keep(answered: dict[Q, A]) -> None:
            answered = {q: a for q, a in answered.items() if q not in out}  # streamed ones come once
            out.update(answered)
            self.requests_made += len(answered)
            if self.cache is not None and answered:
                self.cache.put_many({keys[q]: encode(a) for q, a in answered.items()})
            if progress is not None and answered:
                progress(len(answered))

        def keep_window(window: list[Q], answered: dict[int, A]) -> None:
            keep({window[i]: a for i, a in answered.items()})

        size = self.batch_size * (self.window_batches if self.streams_answers else 1)
        for s in range(0, len(todo), size):
            batch = todo[s : s + size]
            try:
                answers = list(answer(batch, partial(keep_window, batch)))
            except IncompleteAnswers as e:
                keep({q: a for q, a in zip(batch, e.answers) if a is not MISSING})
                failed = [batch[i] for i in e.failed] or [q for q in batch if q not in out]
                raise self._resumable(e.cause, failed, len(out), len(unique))
            except APIError as e:
                raise self._resumable(e, [q for q in batch if q not in out], len(out), len(unique))
            if len(answers) != len(batch):  # a backend that loses answers is a bug, not a silent gap
                raise RuntimeError(f"{type(self).__name__} answered {len(answers)} of {len(batch)} questions")
            keep(dict(zip(batch, answers)))
        return [out[q] for q in items]

    def _resumable(self, error: BaseException, failed: list[Any], answered: int, total: int) -> BaseException:
        """``error``, its message saying which questions it stopped, what finished, and how to resume."""
        kept = ("cached: a rerun asks only the rest" if self.cache is not None
                else "not cached (cache=False / --no-cache): a rerun asks them all again")
        shown = ", ".join(repr(q if isinstance(q, str) else tuple(q))[:80] for q in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        note = f" [failed: {shown}{more}; {answered} of {total} questions were answered and are {kept}]"
        error.args = (f"{error.args[0] if error.args else error}{note}", *error.args[1:])
        if isinstance(error, APIError):
            error.message += note
        error.__suppress_context__ = True  # its own __cause__, if any, is what to show
        return error

    # -- life cycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release what the backend holds open (connections, the cache's file handle)."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self: "B") -> "B":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cache = resolve_cache(self._cache_arg)


B = TypeVar("B", bound=Backend)


class VocabularyBackend(Backend):
    """A backend that reads the whole next-token distribution, and so can propose words of its own.

    What :func:`~calibkit.search_forms` asks of a model besides the two questions.
    Subclasses implement :attr:`n_vocab`, :meth:`token_ids`, :meth:`token_text` and
    :meth:`next_token_logprobs`; the question the search asks,
    :meth:`mean_next_token_logprobs`, is answered from them behind the cache, keyed by
    the backend's identity and the prompts, so that a rerun asks the model nothing.
    (A whole-vocabulary row is megabytes: one is cached per set of prompts, not per
    prompt. Tokenizing is the tokenizer's, asked directly.)

    >>> class Coin(VocabularyBackend):
    ...     identity = {"backend": "coin", "model": "coin"}
    ...     n_vocab = 2
    ...     def token_ids(self, text, *, add_bos=False):
    ...         return [[" heads", " tails"].index(w) for w in text.split(" ")[1:]]
    ...     def token_text(self, token_id):
    ...         return [" heads", " tails"][token_id]
    ...     def next_token_logprobs(self, prompt):
    ...         p = 0.9 if prompt.endswith("heads") else 0.5
    ...         return np.log([p, 1 - p])
    ...     def _answer_top_k(self, prompts, k, *, keep=None):
    ...         raise NotImplementedError
    ...     def _answer_continuations(self, pairs, *, keep=None):
    ...         raise NotImplementedError
    >>> m = Coin(cache=False)
    >>> np.exp(m.mean_next_token_logprobs(["Toss: heads", "Toss:", "Toss: tails"], [0, 0, 1])).round(3).tolist()
    [[0.671, 0.224], [0.5, 0.5]]
    """

    @property
    @abstractmethod
    def n_vocab(self) -> int:
        """Tokens in the vocabulary: the length of :meth:`next_token_logprobs`."""

    @abstractmethod
    def token_ids(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the BOS token comes first (as for a prompt)."""

    @abstractmethod
    def token_text(self, token_id: int) -> str:
        """The string of one token id."""

    @abstractmethod
    def next_token_logprobs(self, prompt: str) -> np.ndarray:
        """The exact next-token distribution after ``prompt``: log-probabilities over the whole vocabulary."""

    def mean_next_token_logprobs(
        self, prompts: Sequence[str], groups: Sequence[int] | None = None, *,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Every token's log-probability after the prompts, averaged over each group of them.

        ``groups[i]`` is prompt ``i``'s group, 0 to G - 1, each with a prompt at least
        (None: one group). Returns a float64 array of G rows of :attr:`n_vocab`. The
        prompts are run in the order given, and the whole answer is cached as one: the
        same prompts and groups to the same backend are asked once. ``progress`` is
        called with the number of prompts done (all at once on a cache hit).
        """
        ps = tuple(_strings(prompts, "prompts"))
        gs = tuple(0 for _ in ps) if groups is None else tuple(int(g) for g in groups)
        if len(gs) != len(ps):
            raise ValueError(f"groups has {len(gs)} entries for {len(ps)} prompts; give one group per prompt")
        counts = np.bincount(gs) if gs and min(gs) >= 0 else np.zeros(0, dtype=int)
        if not counts.size or not counts.all():
            raise ValueError("mean_next_token_logprobs needs prompts, and groups numbered 0 to G - 1, "
                             f"each with a prompt (got {len(ps)} prompts, groups {sorted(set(gs))[:10]})")

        def answer(questions: list[tuple[tuple[str, ...], tuple[int, ...]]], keep: Keep) -> list[np.ndarray]:
            out = []
            for qs, qg in questions:
                sums = np.zeros((len(counts), self.n_vocab))
                for p, g in zip(qs, qg):
                    sums[g] += self.next_token_logprobs(p)
                    if progress is not None:
                        progress(1)
                out.append(sums / counts[:, None])
            return out

        hits = self.cache_hits
        [means] = self._ask(
            "mean_next_token_logprobs",
            [(ps, gs)],
            lambda q: {"prompts": list(q[0]), "groups": list(q[1])},
            answer,
            encode=lambda a: {"shape": list(a.shape),
                              "float64": base64.b64encode(np.asarray(a, dtype="<f8").tobytes()).decode("ascii")},
            decode=lambda v: np.frombuffer(base64.b64decode(v["float64"]), dtype="<f8")
                               .astype(np.float64).reshape(v["shape"]),
            progress=None,
        )
        if progress is not None and self.cache_hits > hits:
            progress(len(ps))
        return means


class SharedOnCopy:
    """A backend that holds something heavy (a model in memory, a pool of actors) is shared, not copied.

    scikit-learn's ``clone`` deep-copies an estimator's parameters; a copy of such a
    backend is the backend itself. (Pickling still sends only its recipe.)

    >>> import copy
    >>> class Heavy(SharedOnCopy):
    ...     pass
    >>> h = Heavy()
    >>> copy.deepcopy(h) is h and copy.copy(h) is h
    True
    """

    def __deepcopy__(self: "S", memo: dict) -> "S":
        return self

    def __copy__(self: "S") -> "S":
        return self


S = TypeVar("S", bound=SharedOnCopy)


def _strings(values: Sequence[str], name: str) -> list[str]:
    values = list(values)
    for v in values:
        if not isinstance(v, str):
            raise TypeError(f"{name} must be strings (got {type(v).__name__})")
    return values

"""Prompt templates and verbalizers: examples to prompts, classes to surface forms.

A :class:`PromptTemplate` formats one example (a string, a dict, a pandas row) into a
prompt, after optional instructions and few-shot demonstrations. A
:class:`Verbalizer` maps each class to one or more surface forms; a class's
probability is the sum over its forms. :func:`check_traps` looks for the tokenization
traps that silently ruin scores.

Example
-------
>>> tpl = PromptTemplate("Review: {text}\\nSentiment:")
>>> tpl.format("a gorgeous film")
'Review: a gorgeous film\\nSentiment:'
>>> verb = Verbalizer({"negative": [" negative", " bad"], "positive": " positive"})
>>> verb.classes, verb.forms
(['negative', 'positive'], [[' negative', ' bad'], [' positive']])
"""

from __future__ import annotations

import string
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = [
    "PromptTemplate",
    "is_missing",
    "iter_examples",
    "TRAP_METHODS",
    "TokenizationTrap",
    "TokenizationWarning",
    "Verbalizer",
    "check_traps",
    "warn_traps",
]


class TokenizationWarning(UserWarning):
    """A template/verbalizer pair that tokenizes in a way that distorts scores."""


def _fields_of(text: str, what: str) -> list[str]:
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{what} is not a valid format string ({e}); write literal braces as {{{{ and }}}}") from e
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(f"{what} must name its fields, as in 'Review: {{text}}' (found {{{name}}})")
        base = name.split(".")[0].split("[")[0]
        if base not in names:
            names.append(base)
    return names


def is_missing(value: Any) -> bool:
    """Whether a value is missing: None, a float NaN (numpy's too), ``pd.NA`` or ``pd.NaT``.

    An empty string is not missing: it is a legitimate, content-free input (see
    :data:`calibkit.scoring.CONTENT_FREE`).

    >>> [is_missing(v) for v in (None, float("nan"), "", "text", 0)]
    [True, True, False, False, False]
    """
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return False
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing markers, without importing pandas
        return True
    try:
        return bool(value != value)  # NaN is the one value unequal to itself
    except (TypeError, ValueError):  # arrays and other values with no single truth value
        return False


def _positions(rows: Sequence[int], total: int, noun: str = "example") -> str:
    """``"examples 3, 17 (2 of 120)"``: the first few positions, and how many there are."""
    shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    return f"{noun}{'s' if len(rows) > 1 else ''} {shown} ({len(rows)} of {total})"


_MISSING_FIX = "fill them, or drop those rows first (calibkit's CLI: --drop-missing)"


def _as_mapping(example: Any, fields: list[str]) -> Mapping[str, Any]:
    if isinstance(example, str):
        if len(fields) != 1:
            raise ValueError(
                f"the template has fields {fields}; pass a dict or a DataFrame row with those keys, "
                f"not a single string"
            )
        return {fields[0]: example}
    if isinstance(example, Mapping):
        return example
    if hasattr(example, "to_dict"):  # pandas Series (a DataFrame row)
        return example.to_dict()
    if isinstance(example, (tuple, list)) and len(example) == len(fields):
        return dict(zip(fields, example))
    raise TypeError(
        f"an example must be a string, a dict or a pandas row (got {type(example).__name__})"
    )


class PromptTemplate:
    """Formats examples into prompts.

    Parameters
    ----------
    template : a format string with named fields, e.g. ``"Premise: {premise}\\n
        Hypothesis: {hypothesis}\\nAnswer:"``. The model's next token after it is
        what gets scored, so it ends where the label should begin.
    instructions : text placed before everything else.
    demonstrations : few-shot examples as ``(example, label)`` pairs; each is
        rendered with the template followed by the label's first surface form.
    separator : what joins instructions and demonstrations to the query.

    >>> tpl = PromptTemplate("Q: {q}\\nA:", instructions="Answer yes or no.",
    ...                      demonstrations=[("Is ice cold?", "yes")])
    >>> print(tpl.format({"q": "Is fire cold?"}, verbalizer=Verbalizer({"yes": " yes", "no": " no"})))
    Answer yes or no.
    <BLANKLINE>
    Q: Is ice cold?
    A: yes
    <BLANKLINE>
    Q: Is fire cold?
    A:
    """

    def __init__(
        self,
        template: str,
        *,
        instructions: str = "",
        demonstrations: Sequence[tuple[Any, Hashable]] = (),
        separator: str = "\n\n",
    ):
        if not isinstance(template, str) or not template:
            raise ValueError("template must be a non-empty format string such as 'Review: {text}\\nSentiment:'")
        self.template = template
        self.fields = _fields_of(template, "template")
        if not self.fields:
            raise ValueError("template has no field: write where the example goes, as in 'Review: {text}'")
        self.instructions = instructions
        self.demonstrations = [tuple(d) for d in demonstrations]
        for i, d in enumerate(self.demonstrations):
            if len(d) != 2:
                raise ValueError(f"demonstrations[{i}] must be an (example, label) pair")
        self.separator = separator

    def __repr__(self) -> str:
        extra = ""
        if self.instructions:
            extra += f", instructions={self.instructions!r}"
        if self.demonstrations:
            extra += f", demonstrations=<{len(self.demonstrations)}>"
        return f"PromptTemplate({self.template!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptTemplate) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(repr(self._key()))

    def _key(self) -> tuple:
        return (self.template, self.instructions, repr(self.demonstrations), self.separator)

    def _values(self, example: Any) -> Mapping[str, Any]:
        """The example's value of each field (KeyError naming a field it lacks)."""
        values = _as_mapping(example, self.fields)
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise KeyError(
                f"the example has no {missing[0]!r} (the template needs {self.fields}; "
                f"it has {sorted(map(str, values))})"
            )
        return values

    def _query(self, example: Any, what: str = "the example") -> str:
        if is_missing(example):
            raise ValueError(f"{what} is {example!r}, not an example: give it a value, or drop it")
        values = self._values(example)
        empty = [f for f in self.fields if is_missing(values[f])]
        if empty:
            raise ValueError(
                f"{what} has no value for field {empty[0]!r} ({values[empty[0]]!r}); fill it, or drop that row"
            )
        return self.template.format(**{f: values[f] for f in self.fields})

    def check(self, examples: Any) -> list[Any]:
        """The examples as a list, checked: a missing value (see :func:`is_missing`) is an error.

        The error names the field and the examples' positions (from 0), the first
        few and how many, so that they can be found and filled or dropped. Empty
        strings are values, not missing.

        >>> tpl = PromptTemplate("Review: {text}")
        >>> tpl.check([{"text": "fine"}, {"text": None}])
        Traceback (most recent call last):
        ...
        ValueError: example 1 (1 of 2) has no value for field 'text' (None/NaN); fill them, or drop those rows first (calibkit's CLI: --drop-missing)
        """
        rows = iter_examples(examples)
        where: dict[str, list[int]] = {}
        for i, ex in enumerate(rows):
            if is_missing(ex):  # a None in a list of strings: every field is missing
                for f in self.fields:
                    where.setdefault(f, []).append(i)
                continue
            if isinstance(ex, (str, Mapping, tuple, list)) or hasattr(ex, "to_dict"):
                values = self._values(ex)
                for f in self.fields:
                    if is_missing(values[f]):
                        where.setdefault(f, []).append(i)
        if where:
            n = len(rows)
            if len(where) == 1:
                (f, idx), = where.items()
                has = "has" if len(idx) == 1 else "have"
                raise ValueError(f"{_positions(idx, n)} {has} no value for field {f!r} (None/NaN); {_MISSING_FIX}")
            all_idx = sorted({i for idx in where.values() for i in idx})
            parts = "; ".join(f"{f!r} in {_positions(where[f], n)}" for f in self.fields if f in where)
            has = "has" if len(all_idx) == 1 else "have"
            raise ValueError(
                f"{_positions(all_idx, n)} {has} no value (None/NaN) for a field: {parts}; {_MISSING_FIX}"
            )
        return rows

    def prefix(self, verbalizer: "Verbalizer | None" = None) -> str:
        """Instructions and demonstrations, with the separator: the part every prompt shares."""
        parts = [self.instructions] if self.instructions else []
        if self.demonstrations:
            if verbalizer is None:
                raise ValueError(
                    "this template has demonstrations: pass verbalizer= so that their labels "
                    "can be written with the label's surface form"
                )
            for i, (ex, label) in enumerate(self.demonstrations):
                parts.append(self._query(ex, f"demonstrations[{i}]") + verbalizer.form_of(label))
        return "".join(p + self.separator for p in parts)

    def format(self, example: Any, verbalizer: "Verbalizer | None" = None) -> str:
        """The prompt for one example; a missing value (None, NaN) is a ValueError naming its field.

        >>> PromptTemplate("Review: {text}").format({"text": float("nan")})
        Traceback (most recent call last):
        ...
        ValueError: the example has no value for field 'text' (nan); fill it, or drop that row
        """
        return self.prefix(verbalizer) + self._query(example)

    def format_many(self, examples: Any, verbalizer: "Verbalizer | None" = None) -> list[str]:
        """Prompts for a list of strings or dicts, a pandas Series, or a DataFrame (one row each).

        Missing values are checked first, all of them (see :meth:`check`): the error
        names the field and the examples' positions.

        >>> PromptTemplate("T: {text}").format_many(["a", ""])
        ['T: a', 'T: ']
        """
        rows = self.check(examples)
        prefix = self.prefix(verbalizer)
        return [prefix + self._query(ex, f"example {i}") for i, ex in enumerate(rows)]


def iter_examples(examples: Any) -> list[Any]:
    """Examples as a list: a DataFrame gives its rows as dicts, a Series its values.

    >>> import pandas as pd
    >>> iter_examples(pd.DataFrame({"text": ["a", "b"]}))
    [{'text': 'a'}, {'text': 'b'}]
    """
    if isinstance(examples, str):
        raise TypeError("examples must be a list of examples, not one string: wrap it as [text]")
    if hasattr(examples, "to_dict") and hasattr(examples, "columns"):  # DataFrame
        return examples.to_dict("records")
    if hasattr(examples, "tolist") and not isinstance(examples, Mapping):  # Series, ndarray
        return list(examples.tolist())
    return list(examples)


class Verbalizer:
    """Maps each class to one or more surface forms.

    ``mapping`` is ``{class: form}`` or ``{class: [form, ...]}``, in class order.
    Forms usually start with a space, as they would follow ``"Sentiment:"``.

    >>> v = Verbalizer({0: " negative", 1: [" positive", " good"]})
    >>> v.classes, v.form_of(1)
    ([0, 1], ' positive')
    """

    def __init__(self, mapping: Mapping[Hashable, str | Sequence[str]]):
        if not isinstance(mapping, Mapping) or len(mapping) < 2:
            raise ValueError("a verbalizer needs a mapping of at least two classes to their surface forms")
        self.classes: list[Hashable] = list(mapping)
        self.forms: list[list[str]] = []
        seen: dict[str, Hashable] = {}
        for c, fs in mapping.items():
            forms = [fs] if isinstance(fs, str) else list(fs)
            if not forms or not all(isinstance(f, str) and f for f in forms):
                raise ValueError(f"class {c!r} needs at least one non-empty surface form (got {fs!r})")
            for i, f in enumerate(forms):
                if f in forms[:i]:
                    raise ValueError(f"the form {f!r} is given twice for class {c!r}; give each form once")
                if f in seen:
                    raise ValueError(f"the form {f!r} is given for both {seen[f]!r} and {c!r}; each form belongs to one class")
                seen[f] = c
            self.forms.append(forms)

    @property
    def mapping(self) -> dict[Hashable, list[str]]:
        return dict(zip(self.classes, self.forms))

    @property
    def all_forms(self) -> list[str]:
        """Every form, class by class."""
        return [f for fs in self.forms for f in fs]

    @property
    def form_class(self) -> list[int]:
        """For each entry of :attr:`all_forms`, the index of its class."""
        return [k for k, fs in enumerate(self.forms) for _ in fs]

    def form_of(self, label: Hashable) -> str:
        """The first (canonical) form of a class, used to write demonstrations."""
        try:
            return self.forms[self.classes.index(label)][0]
        except ValueError:
            raise KeyError(f"{label!r} is not a class of this verbalizer (classes: {self.classes})") from None

    def __repr__(self) -> str:
        return f"Verbalizer({self.mapping!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verbalizer) and self.mapping == other.mapping

    def __hash__(self) -> int:
        return hash(repr(self.mapping))


#: The scoring methods that lose something to each kind of trap (see :func:`check_traps`).
TRAP_METHODS: dict[str, tuple[str, ...]] = {
    "trailing-space": ("topk", "exact", "auto"),
    "case-variant": ("topk", "exact", "auto"),
    "boundary-merge": ("topk", "exact", "auto"),
    "multi-token": ("topk",),
    "shared-first-token": ("topk",),
}


@dataclass
class TokenizationTrap:
    """One trap found by :func:`check_traps`.

    ``methods`` are the scoring methods it distorts (:data:`TRAP_METHODS`).

    >>> TokenizationTrap("multi-token", "...", [" World news"]).methods
    ('topk',)
    """

    kind: str  # a key of TRAP_METHODS
    message: str
    forms: list[str] = field(default_factory=list)

    @property
    def methods(self) -> tuple[str, ...]:
        return TRAP_METHODS[self.kind]


def check_traps(
    template: PromptTemplate,
    verbalizer: Verbalizer,
    backend: "Backend | None" = None,
    example: Any = None,
    *,
    method: str | None = None,
    tokens: Sequence[Sequence[str] | None] | None = None,
) -> list[TokenizationTrap]:
    """Find the tokenization traps of a template and verbalizer.

    Without a backend only the text is checked (a template ending in whitespace before
    forms that start with one, case variants across classes). With one, the forms are
    tokenized after a real prompt (``example``, or a placeholder): forms of several
    tokens, classes whose forms share a first token, and forms whose first token
    merges with the end of the prompt. ``tokens``, the forms' tokens after that prompt
    (as :meth:`~calibkit.Backend.form_tokens` gives them), stand in for the backend
    where the caller has them already.

    ``method`` keeps only the traps that distort that scoring method
    (:data:`TRAP_METHODS`); None keeps every trap:

    - ``"trailing-space"``, every method: the model would have to write a second
      space before the form, so every method scores an unlikely sequence;
    - ``"case-variant"``, every method: classes that differ only in case or spacing
      are told apart by the model's taste in capitals, not by the example;
    - ``"boundary-merge"``, every method: no log-probability belongs to the form alone
      (:func:`~calibkit.score` raises :class:`~calibkit.TokenizationError`);
    - ``"multi-token"``, ``"topk"`` only: top-k sees a form's first token, whose
      probability merely bounds the form's; ``"exact"`` and ``"auto"`` score it whole;
    - ``"shared-first-token"``, ``"topk"`` only: the shared first token cannot tell
      the classes apart; ``"exact"`` and ``"auto"`` score the whole forms.

    >>> traps = check_traps(PromptTemplate("Sentiment: {text} "), Verbalizer({"a": " good", "b": " bad"}))
    >>> [t.kind for t in traps]
    ['trailing-space']
    >>> verb = Verbalizer({"a": " very good", "b": " bad"})
    >>> tokens = [[" very", " good"], [" bad"]]
    >>> [t.kind for t in check_traps(PromptTemplate("Sentiment: {text}"), verb, tokens=tokens, method="topk")]
    ['multi-token']
    >>> check_traps(PromptTemplate("Sentiment: {text}"), verb, tokens=tokens, method="exact")
    []
    """
    if method is not None and method not in ("topk", "exact", "auto"):
        raise ValueError(f"method must be 'auto', 'topk', 'exact' or None (got {method!r})")
    traps: list[TokenizationTrap] = []
    if template.template[-1].isspace():
        spaced = [f for f in verbalizer.all_forms if f[:1].isspace()]
        if spaced:
            traps.append(
                TokenizationTrap(
                    "trailing-space",
                    f"the template ends in whitespace and the forms {spaced} start with a space: "
                    "the model would have to predict a second space; drop the template's trailing space",
                    spaced,
                )
            )
    lowered: dict[str, list[tuple[int, str]]] = {}
    for k, fs in enumerate(verbalizer.forms):
        for f in fs:
            lowered.setdefault(f.strip().lower(), []).append((k, f))
    for variants in lowered.values():
        if len({k for k, _ in variants}) > 1:
            fs = [f for _, f in variants]
            traps.append(
                TokenizationTrap(
                    "case-variant",
                    f"the forms {fs} differ only in case or spacing but belong to different classes",
                    fs,
                )
            )
    if tokens is None and backend is not None:
        if example is None:
            example = {f: "example" for f in template.fields}
        tokens = backend.form_tokens(template.format(example, verbalizer), verbalizer.all_forms)
    if tokens is not None:
        traps += _token_traps(verbalizer, tokens)
    return [t for t in traps if method is None or method in t.methods]


def _token_traps(verbalizer: Verbalizer, tokens: Sequence[Sequence[str] | None]) -> list[TokenizationTrap]:
    """The traps that the forms' tokens after a prompt show."""
    if len(tokens) != len(verbalizer.all_forms):
        raise ValueError(f"tokens must give one entry per form ({len(verbalizer.all_forms)}), got {len(tokens)}")
    traps: list[TokenizationTrap] = []
    first_owner: dict[str, set[int]] = {}
    for f, k, toks in zip(verbalizer.all_forms, verbalizer.form_class, tokens):
        if toks is None:
            traps.append(
                TokenizationTrap(
                    "boundary-merge",
                    f"the form {f!r} merges with the end of the prompt into one token, so no "
                    "next-token probability belongs to it; end the template earlier or change the form",
                    [f],
                )
            )
            continue
        if len(toks) > 1:
            traps.append(
                TokenizationTrap(
                    "multi-token",
                    f"the form {f!r} is {len(toks)} tokens {list(toks)}: top-k scoring sees only its first "
                    "token, whose probability only bounds the form's; method='auto' or 'exact' scores it whole",
                    [f],
                )
            )
        first_owner.setdefault(toks[0], set()).add(k)
    for tok, owners in first_owner.items():
        if len(owners) > 1:
            fs = [f for f, t in zip(verbalizer.all_forms, tokens) if t and t[0] == tok]
            traps.append(
                TokenizationTrap(
                    "shared-first-token",
                    f"the forms {fs} of different classes start with the same token {tok!r}: "
                    "top-k scoring cannot tell the classes apart by it; method='auto' or 'exact' "
                    "scores the whole forms",
                    fs,
                )
            )
    return traps


def warn_traps(traps: list[TokenizationTrap]) -> None:
    """Each trap as a :class:`TokenizationWarning`, attributed to the caller's caller.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_traps([TokenizationTrap("case-variant", "the forms differ only in case", [" A", " a"])])
    >>> [str(x.message) for x in w]
    ['the forms differ only in case']
    """
    for t in traps:
        warnings.warn(t.message, TokenizationWarning, stacklevel=3)

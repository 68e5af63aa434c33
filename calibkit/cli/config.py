"""``calibkit eval --config FILE.toml``: a study in a file, for a study that lives in a repository.

The file's keys are :class:`calibkit.Study`'s parameters (the flags' names, templates,
verbalizers and models in the plural), plus ``dataset`` and ``out``; paths in it are
relative to its folder. Only the file's form is checked here: the study checks the values.

Names: the tables ``[templates]`` and ``[verbalizers.NAME]`` name the configurations'
parts (lists are named t1, t2 ... and v1, v2 ...), and ``baseline`` names rows by them,
so a name may not be both a template's and a verbalizer's. A ``baseline`` that names a
template but no verbalizer, where the file has several verbalizers, is that template
with the file's first verbalizer (and a verbalizer with no template, the first
template): the first configuration that fits, as the default baseline is the first
configuration. So ``baseline = "plain"`` stays one row when a second verbalizer is
added; with several models, name the model too (``"plain · words · MODEL"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..names import METHODS
from .flags import unescape

__all__ = ["KEYS", "read_study_file"]

#: The keys of a study file, each with what its value must be.
KEYS = (
    "dataset", "format", "text_column", "label_column", "limit", "shuffle", "stratify", "drop_missing",
    "templates", "verbalizers", "method", "k", "calibrators", "calibration_fraction", "bootstrap", "metrics",
    "out", "baseline", "alpha", "seed", "models", "api_base", "backend",
)
_INTEGERS = ("limit", "k", "bootstrap", "seed")
_NUMBERS = ("alpha", "calibration_fraction")
_SWITCHES = ("shuffle", "stratify", "drop_missing")
_LISTS = ("calibrators", "metrics", "text_column", "models")
_CHOICES = {"method": METHODS, "backend": ("local", "hf")}


def read_study_file(path: str | Path) -> dict[str, Any]:
    """The study a TOML file describes, as :class:`calibkit.Study`'s keyword arguments
    (``dataset`` and ``out`` under those names)."""
    tomllib = _toml()
    path = Path(path)
    with open(path, "rb") as f:
        try:
            table = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"--config {path} is not TOML: {e}") from None
    where = f"--config {path}"
    unknown = [k for k in table if k not in KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key {', '.join(map(repr, unknown))}; the keys are: {', '.join(KEYS)}")

    def fail(key: str, what: str, value: Any) -> ValueError:
        return ValueError(f"{where}: {key} must be {what} (got {value!r})")

    def kind(key: str, value: Any, types: tuple, what: str) -> Any:
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise fail(key, what, value)
        return value

    def strings(key: str, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise fail(key, "a string or a list of strings", value)

    def template(key: str, value: Any) -> str:
        return unescape(kind(key, value, (str,), "a template string, e.g. \"Review: {text}\\nSentiment:\""))

    def verbalizer(key: str, value: Any) -> dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, dict):
            return value
        raise fail(key, 'a table of class = form(s), e.g. {negative = " negative", positive = " positive"}, or '
                        'that as a JSON string', value)

    def named(key: str, value: Any, item: Callable[[str, Any], Any]) -> Any:
        """A list of values (named t1, t2 ... by the study), or a table of name = value."""
        if isinstance(value, dict) and value and all(isinstance(v, (str, dict)) for v in value.values()) \
                and not (key == "verbalizers" and not any(isinstance(v, dict) for v in value.values())):
            return {str(n): item(f"{key}.{n}", v) for n, v in value.items()}
        if isinstance(value, list) and value:
            return [item(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if (key == "verbalizers" and isinstance(value, dict) and value) or isinstance(value, str):
            return [item(key, value)]  # one, as a table or a string
        raise fail(key, "a list, or a table of name = value", value)

    out: dict[str, Any] = {}
    base = path.parent
    for key, value in table.items():
        if key in _INTEGERS:
            value = kind(key, value, (int,), "an integer")
        elif key in _NUMBERS:
            value = float(kind(key, value, (int, float), "a number"))
        elif key in _SWITCHES:
            value = kind(key, value, (bool,), "true or false")
        elif key in _LISTS:
            value = strings(key, value)
        elif key == "templates":
            value = named(key, value, template)
        elif key == "verbalizers":
            value = named(key, value, verbalizer)
        else:
            value = kind(key, value, (str,), "a string")
            if key in _CHOICES and value not in _CHOICES[key]:
                raise fail(key, f"one of {', '.join(_CHOICES[key])}", value)
            if key == "out" or (key == "dataset" and (base / value).is_file()):
                value = str(base / value)
        out[key] = value
    t_names, v_names = _names(out.get("templates"), "t"), _names(out.get("verbalizers"), "v")
    both = [n for n in t_names if n in v_names]
    if both:
        raise ValueError(f"{where}: {both[0]!r} names a template and a verbalizer; give them different names "
                         "(baseline names rows by them)")
    return out


def _names(values: Any, prefix: str) -> list[str]:
    """The names a study gives its templates or verbalizers: a table's, or t1, t2 ... for a list."""
    if isinstance(values, dict):
        return list(values)
    return [f"{prefix}{i}" for i in range(1, len(values) + 1)] if values else []


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("--config reads TOML: on Python 3.10, pip install tomli") from None
    return tomllib

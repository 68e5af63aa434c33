"""The command line's words: the flags shared by the commands, and the one translation of
the library's parameter names into them.

The library checks every value and says what is wrong in Python's words
(``text_column=``); :func:`flag_words` says it in the command line's (``--text-column``).
No command checks a value the library checks.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from ..names import BACKEND_OPTIONS, DEFAULT_CALIBRATORS, METHODS, METRIC_NAMES

__all__ = [
    "FLAGS", "backend_args", "backend_options", "data_args", "flag_words", "json_object", "report_args", "seed_arg",
    "selection_options", "unescape",
]

#: Python parameter names in library messages, and the flags that set them.
FLAGS = {
    "text_column": "--text-column",
    "label_column": "--label-column",
    "format": "--format",
    "template": "--template",
    "templates": "--template",
    "verbalizer": "--verbalizer",
    "verbalizers": "--verbalizer",
    "method": "--method",
    "limit": "--limit",
    "shuffle": "--shuffle",
    "stratify": "--stratify",
    "drop_missing": "--drop-missing",
    "calibration_fraction": "--calibration-fraction",
    "bootstrap": "--bootstrap",
    "n_boot": "--bootstrap",
    "seed": "--seed",
    "model_path": "--model",
    "model": "--model",
    "models": "--model",
    "api_key": "--api-key",
    "api_base": "--api-base",
    "base_url": "--api-base",
    "backend": "--backend",
    "device": "--device",
    "dtype": "--dtype",
    "threads": "--threads",
    "workers": "--workers",
    "ray": "--ray",
    "keys_file": "--keys-file",
    "k": "-k",
    "timeout": "--timeout",
    "max_in_flight": "--max-in-flight",
    "metrics": "--metrics",
    "calibrators": "--calibrators",
    "calibration": "--calibrators",
    "baseline": "--baseline",
    "alpha": "--alpha",
    "n_proposed": "--proposed",
    "cv": "--cv",
}
_SWITCH = re.compile(r"(?<![\w\-.])(shuffle|stratify|drop_missing)=True\b")
_PY_NAME = re.compile(r"(?<![\w\-.])(" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")(=|(?= <=))(\S?)")


def flag_words(message: str) -> str:
    """A library message in the command line's words: Python argument names become flags.

    >>> flag_words("no column 'x'; pass text_column= naming one of them")
    "no column 'x'; pass --text-column naming one of them"
    >>> flag_words("format='xml' is not one calibkit reads; k=30 is too many, pass k <= 20")
    "--format 'xml' is not one calibkit reads; -k 30 is too many, pass -k <= 20"
    >>> flag_words("limit=4: the first 4 rows; shuffle=True or stratify=True draw a sample instead")
    '--limit 4: the first 4 rows; --shuffle or --stratify draw a sample instead'
    """
    def sub(m: re.Match) -> str:
        value = m.group(3)
        space = " " if value and value not in ",;.:)" else ""
        return FLAGS[m.group(1)] + space + value

    return _PY_NAME.sub(sub, _SWITCH.sub(lambda m: FLAGS[m.group(1)], message))


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    r"""Turn the escapes ``\n``, ``\t`` and ``\\`` typed in a shell into newline, tab and
    backslash; every other character stays as typed (``é`` too).

    >>> unescape("Critique : {text}\\nAvis é:")
    'Critique : {text}\nAvis é:'
    >>> unescape("a\\\\nb \\d")
    'a\\nb \\d'
    """
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def json_object(flag: str, text: str, example: str) -> dict:
    """A flag's JSON object of class -> form(s), or a ValueError naming the flag."""
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object of class -> form(s): {e}") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"{flag} must be a JSON object of class -> form(s), as in '{example}' "
                         f"(got {type(mapping).__name__})")
    return mapping


def backend_args(p: argparse.ArgumentParser, *, ray: bool = False, several: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--api-base",
        metavar="URL",
        help="a completions API base URL (e.g. $ACS_API_BASE); default: a model in-process (--backend)",
    )
    g.add_argument("--api-key", metavar="KEY", help="API key (default: $ACS_API_KEY)")
    g.add_argument("--backend", choices=("local", "hf"), default=None,
                   help="the model in-process: local, llama.cpp over a GGUF (the default), or hf, transformers "
                        "over a checkpoint folder, a .gguf file or a hub name (pip install 'calibkit[hf]')")
    g.add_argument("--model", metavar="NAME", action="append" if several else "store",
                   help="model name at the API; with --backend local a GGUF path, with --backend hf a checkpoint "
                        "folder, .gguf file or hub name (default: the bundled gemma-3-270m)"
                        + ("; repeat to compare several" if several else ""))
    g.add_argument("--device", metavar="DEVICE",
                   help="with --backend hf: a torch device, e.g. cpu, cuda, cuda:1 (default: CUDA where there is a GPU)")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16", "float64"),
                   help="with --backend hf: the weights' dtype (default: the checkpoint's own; float32 for a GGUF)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="with --backend local: CPU threads of the embedded model (default: all cores; with "
                        "--workers on this machine, the cores shared out; with --ray, each actor's threads)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    g.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --api-base: seconds to wait for one answer (default 60); a request that times out "
                        "is sent again in smaller pieces; raise it for a slow or busy server")
    g.add_argument("--max-in-flight", type=int, metavar="N",
                   help="with --api-base: requests in flight at once (default 8); the client lowers it by itself "
                        "on timeouts and overload answers (429, 503, 504): this is where it starts")
    if ray:
        r = p.add_argument_group("scale out (Ray; pip install 'calibkit[ray]')")
        r.add_argument("--workers", type=int, metavar="N",
                       help="score with N Ray actors, each holding its own copy of the model (or client); "
                            "without --ray on a Ray instance started on this machine (default with --ray: 2)")
        r.add_argument("--ray", metavar="ADDRESS",
                       help="join this Ray cluster ('auto': the one `ray start` runs on this node, or HOST:6379); "
                            "the answers come back here and go into this machine's cache")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags as :func:`calibkit.backends.factory.open_backend`'s options (model aside)."""
    return {name: getattr(args, name, None) for name in BACKEND_OPTIONS}


def data_args(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    from ..datasets.formats import FORMATS

    g = p.add_argument_group("data")
    g.add_argument("dataset", nargs="?", default="sentiment",
                   help="a bundled data set name or a data file (default: sentiment)")
    g.add_argument("--format", choices=FORMATS, metavar="FORMAT",
                   help=f"the data file's format when its name and first line do not tell: {', '.join(FORMATS)}")
    g.add_argument("--text-column", action="append", metavar="NAME",
                   help="a CSV/JSONL file's text column; repeat for a multi-field template")
    g.add_argument("--label-column", metavar="NAME", help="a CSV/JSONL file's label column (default: label)")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only N examples: the first N, or a seeded sample with --shuffle or --stratify")
    g.add_argument("--shuffle", action="store_true", help="with --limit: a random sample of N rows (--seed)")
    g.add_argument("--stratify", action="store_true",
                   help="with --limit: a random sample of N rows with each class in its share of the data (--seed); "
                        "without --limit every row is taken (eval's calibration split is stratified by label anyway)")
    again = "; repeat to compare several" if several else ""
    g.add_argument("--template", action="append" if several else "store",
                   help="prompt template overriding the data set's, e.g. 'Review: {text}\\nSentiment:' "
                        f"(\\n, \\t and \\\\ are read as newline, tab and backslash){again}")
    g.add_argument("--verbalizer", metavar="JSON", action="append" if several else "store",
                   help='classes to surface forms overriding the data set\'s, e.g. \'{"neg": " negative", "pos": '
                        f'" positive"}}\'{again}')
    g.add_argument("--drop-missing", action="store_true",
                   help="drop the rows with no text (an empty cell) or no label, saying how many; without it "
                        "such rows are an error naming their lines")
    g.add_argument("--method", choices=METHODS, default="auto", help="scoring method (default auto)")
    g.add_argument("-k", type=int, default=None,
                   help="top-k size for --method topk and auto (default: the endpoint's cap, 20 for ACS)")


def verbalizer_of(text: str | None, name: str = "") -> dict | None:
    """A --verbalizer's JSON as a mapping (None stays None); an error names the study's
    verbalizer ``name`` (v1, v2 ...) where given."""
    if text is None:
        return None
    try:
        return json_object("--verbalizer", text, '{"neg": " negative", "pos": " positive"}')
    except ValueError as e:
        if not name:
            raise
        raise ValueError(f"{name}: {e}") from None


def selection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The data flags as :func:`calibkit.datasets.selection.select`'s options (template and
    verbalizer aside: a study takes several)."""
    return {"format": args.format, "text_column": args.text_column,
            "label_column": args.label_column, "drop_missing": bool(args.drop_missing), "limit": args.limit,
            "shuffle": bool(args.shuffle), "stratify": bool(args.stratify), "seed": args.seed}


def seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the --shuffle / --stratify sample, the calibration split and the bootstrap (default 0)")


def report_args(p: argparse.ArgumentParser) -> None:
    defaults = ",".join(DEFAULT_CALIBRATORS)
    g = p.add_argument_group("calibration and report")
    g.add_argument("--calibrators", default=defaults,
                   help="comma-separated: none, temperature, vector, matrix, platt, isotonic, histogram, "
                        "contextual, domain, batch; chain them with +, in the order prior correction, scaling, "
                        "binning, e.g. contextual+temperature+isotonic "
                        f"(default: {defaults})")
    g.add_argument("--calibration-fraction", type=float, default=0.5, metavar="F",
                   help="share of the examples the calibrators are fitted on; the rest is held out (default 0.5)")
    g.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the intervals (default 1000)")
    g.add_argument("--metrics", default=",".join(METRIC_NAMES), metavar="NAMES",
                   help=f"comma-separated metrics to compute, each with its bootstrap: {', '.join(METRIC_NAMES)} "
                        "(default: all; smooth_ece's bootstrap is the slowest)")
    g.add_argument("--out", metavar="DIR",
                   help="report folder, which holds this run alone: one holding another run's report is refused "
                        "before anything is scored, unless --overwrite (default: a fresh folder per run, "
                        "reports/<data set name>/<date>-<time>, with reports/<data set name>/latest pointing at "
                        "the newest)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the report in --out (only a calibkit report's files are ever removed)")


def names_list(text: str | None) -> list[str] | None:
    """A comma-separated flag value as a list (None stays None)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]

"""The ``calibkit`` command: score, calibrate and report from the shell, and serve the model.

    calibkit peek "The capital of France is" -k 5     # what the model almost said
    calibkit score sentiment --out scores.csv         # score a data set, print a summary
    calibkit eval                                     # the main job: a calibration report
    calibkit calibrate scores.csv                     # scores file -> calibrated probabilities, report

Each subcommand lives in one ``_cmd_*`` function with its parser beside it.

Errors: a user error (bad input, a missing file, an answer the API refused: see
:data:`USER_ERRORS`) is printed as one line, ``calibkit <command>: <message>``, with
exit status 1, in the words of the command line (``--text-column``, never
``text_column=``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .api import APIError

__all__ = ["USER_ERRORS", "build_parser", "flag_words", "main", "unescape"]

# What a user can cause and fix: bad input of any kind (ValueError and its subclasses:
# InvalidRequestError, DatasetFormatError, TokenizationError, KeyFileError), an error
# answer from an API, a missing or unreadable file. TypeError, KeyError, AttributeError
# and the rest are bugs: they propagate with their traceback. (HFUnavailableError and an
# ImportError that says what to pip install are user errors too, checked in main.)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, APIError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
    ConnectionError,  # a --ray address with no cluster there
)

# Python argument names in library messages, and the flags that set them.
_FLAGS = {
    "text_column": "--text-column",
    "label_column": "--label-column",
    "format": "--format",
    "template": "--template",
    "verbalizer": "--verbalizer",
    "method": "--method",
    "limit": "--limit",
    "calibration_fraction": "--calibration-fraction",
    "n_boot": "--bootstrap",
    "seed": "--seed",
    "model_path": "--model",
    "model": "--model",
    "api_key": "--api-key",
    "base_url": "--api-base",
    "keys_file": "--keys-file",
    "k": "-k",
    "timeout": "--timeout",
    "max_in_flight": "--max-in-flight",
    "metrics": "--metrics",
    "calibrators": "--calibrators",
    "calibration": "--calibrators",
    "baseline": "--baseline",
    "n_proposed": "--proposed",
    "cv": "--cv",
}
_PY_NAME = re.compile(r"(?<![\w\-.])(" + "|".join(sorted(_FLAGS, key=len, reverse=True)) + r")(=|(?= <=))(\S?)")


def flag_words(message: str) -> str:
    """A library message in the command line's words: Python argument names become flags.

    >>> flag_words("no column 'x'; pass text_column= naming one of them")
    "no column 'x'; pass --text-column naming one of them"
    >>> flag_words("format='xml' is not one calibkit reads; k=30 is too many, pass k <= 20")
    "--format 'xml' is not one calibkit reads; -k 30 is too many, pass -k <= 20"
    """
    def sub(m: re.Match) -> str:
        value = m.group(3)
        space = " " if value and value not in ",;.:)" else ""
        return _FLAGS[m.group(1)] + space + value

    return _PY_NAME.sub(sub, message)


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


def _backend_args(p: argparse.ArgumentParser, *, ray: bool = False, several: bool = False) -> None:
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


def _check_backend_args(args: argparse.Namespace) -> None:
    """The model flags' values, checked before any data is loaded."""
    api_only = [flag for flag, v in (("--timeout", args.timeout), ("--max-in-flight", args.max_in_flight))
                if v is not None]
    if api_only and not args.api_base:
        raise ValueError(f"{' and '.join(api_only)} set how calibkit waits on a completions API; give --api-base "
                         "too (the embedded model answers in-process)")
    if args.api_base and args.backend is not None:
        raise ValueError(f"--api-base and --backend {args.backend} name two models; give --api-base for a "
                         "completions API, or --backend for a model in-process")
    hf_only = [flag for flag, v in (("--device", args.device), ("--dtype", args.dtype)) if v is not None]
    if hf_only and args.backend != "hf":
        raise ValueError(f"{' and '.join(hf_only)} set how transformers runs the model; give --backend hf too")
    if args.threads is not None and (args.api_base or args.backend == "hf"):
        raise ValueError("--threads sets the embedded llama.cpp model's CPU threads; drop it, or use --backend local")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1 (got {args.threads})")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ValueError(f"--timeout must be a positive number of seconds (got {args.timeout})")
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise ValueError(f"--max-in-flight must be at least 1 (got {args.max_in_flight})")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {args.workers})")


def _backend(args: argparse.Namespace):  # -> Backend
    from .backends import Client, LocalModel

    cache = False if args.no_cache else None
    workers, address = getattr(args, "workers", None), getattr(args, "ray", None)
    pooled = workers is not None or address is not None
    if pooled:
        workers = workers or 2
    # Pooled, each actor holds the backend without a cache: the answers come back to the pool,
    # whose cache (this machine's) keeps them.
    own_cache = False if pooled else cache
    if args.api_base:
        key = args.api_key or os.environ.get("ACS_API_KEY")
        pacing = {name: v for name, v in (("timeout", args.timeout), ("max_in_flight", args.max_in_flight))
                  if v is not None}
        backend = Client(args.api_base, key, model=args.model, cache=own_cache, **pacing)
    elif args.backend == "hf":
        from .backends import TransformersModel

        _say("loading the model with transformers")
        backend = TransformersModel(args.model, device=args.device or "auto", dtype=args.dtype, cache=own_cache)
    else:
        threads = args.threads
        if threads is None and pooled and address is None:  # one machine's cores, shared out
            threads = max(1, (os.cpu_count() or 1) // workers)
        _say("loading the embedded model")
        backend = LocalModel(args.model, n_threads=threads, cache=own_cache)
    if not pooled:
        return backend
    from .backends import RayPool

    _say(f"starting {workers} Ray actors" + (f" on {address}" if address else " on this machine"))
    gpus = 1 if args.backend == "hf" and (args.device or "").startswith("cuda") else 0
    cpus = backend.n_threads if isinstance(backend, LocalModel) else 1  # Ray then places no more than fit
    return RayPool(backend, workers=workers, address=address, num_cpus=cpus, num_gpus=gpus, cache=cache)


def _say(message: str) -> None:
    """A line on stderr saying what the command is doing (stdout keeps the results)."""
    print(f"calibkit: {message} ...", file=sys.stderr, flush=True)


# -- peek ------------------------------------------------------------------------------
def _peek_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peek",
        help="show the top-k next tokens after a prompt",
        description="The k most likely next tokens after PROMPT, with logprob and probability: "
        "what the model almost said.",
        epilog='example: calibkit peek "The capital of France is" -k 5',
    )
    p.add_argument("prompt", help="the prompt text (use $'...' in bash for newlines)")
    p.add_argument("-k", type=int, default=20, help="how many tokens (default 20; an API may cap it, ACS at 20)")
    _backend_args(p)
    p.set_defaults(func=_cmd_peek)


def _cmd_peek(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be at least 1 (got {args.k})")
    _check_backend_args(args)
    backend = _backend(args)
    _check_k(args, backend)
    top = backend.top_k([args.prompt], args.k)[0]
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[: args.k]
    print(f"{backend.model_name}: top-{len(ranked)} next tokens after {args.prompt!r}")
    print(f"{'rank':>4}  {'token':<24} {'logprob':>9} {'prob':>8}")
    for i, (tok, lp) in enumerate(ranked, 1):
        print(f"{i:>4}  {tok!r:<24} {lp:>9.4f} {math.exp(lp):>8.4f}")
    print(f"mass in the top {len(ranked)}: {sum(math.exp(v) for _, v in ranked):.4f}")
    return 0


# -- data and calibrators shared by score / eval / calibrate ------------------------------
DEFAULT_CALIBRATORS = "contextual,batch,temperature,contextual+temperature"
# report.METRICS's names, spelled here so that --help needs no import of the statistics
# half; tests/cli/test_cli.py checks that the two agree.
DEFAULT_METRICS = ("accuracy", "nll", "brier", "ece", "smooth_ece")


def _data_args(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    from .datasets.formats import FORMATS

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
                   help="with --limit: a random sample of N rows with each class in its share of the data (--seed)")
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
    g.add_argument("--method", choices=("auto", "topk", "exact"), default="auto", help="scoring method (default auto)")
    g.add_argument("-k", type=int, default=None,
                   help="top-k size for --method topk and auto (default: the endpoint's cap, 20 for ACS)")


def _check_data_args(args: argparse.Namespace) -> None:
    """The data flags' values, checked before anything is loaded or scored."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1 (got {args.limit})")
    if args.k is not None and args.k < 1:
        raise ValueError(f"-k must be at least 1 (got {args.k})")
    if args.shuffle and args.stratify:
        raise ValueError("--shuffle and --stratify are two ways to draw the --limit sample; give one")
    if (args.shuffle or args.stratify) and args.limit is None:
        raise ValueError(f"{'--shuffle' if args.shuffle else '--stratify'} draws the --limit sample; give --limit N")
    _check_backend_args(args)


def _json_object(flag: str, text: str, example: str) -> dict:
    """A flag's JSON object of class -> form(s), or a ValueError naming the flag."""
    import json

    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object of class -> form(s): {e}") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"{flag} must be a JSON object of class -> form(s), as in '{example}' "
                         f"(got {type(mapping).__name__})")
    return mapping


def _seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the --shuffle / --stratify sample, the calibration split and the bootstrap (default 0)")


def _check_k(args: argparse.Namespace, backend) -> None:
    cap = getattr(backend, "logprobs_cap", None)
    if args.k is not None and cap is not None and args.k > cap:
        raise ValueError(f"-k must be at most {cap}, the top-k cap of {backend.model_name}'s endpoint (got {args.k})")


def _load(args: argparse.Namespace):
    """The data set the data flags name, with --template and --verbalizer applied.

    Rows with no text or no label are an error naming their lines, or with
    --drop-missing dropped, with a line on stderr saying how many and which.
    """
    import warnings

    from .datasets import MissingValuesError, MissingValuesWarning, list_datasets, load_dataset
    from .templates import PromptTemplate, Verbalizer

    missing = "drop" if getattr(args, "drop_missing", False) else "error"

    @contextlib.contextmanager
    def flagged() -> Iterator[None]:
        """Missing values in the words of the command line: --drop-missing, not missing='drop'."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MissingValuesWarning)  # said on stderr below, in flags
                yield
        except MissingValuesError as e:
            if len(e.rows) < e.total:
                raise ValueError(f"{e.problem}; fill them in, or pass --drop-missing to drop those rows") from None
            raise

    _check_data_args(args)
    args.sample = "all rows"
    template = verbalizer = None
    if args.template:
        try:
            template = PromptTemplate(unescape(args.template))
        except ValueError as e:
            raise ValueError(f"--template: {e}") from None
    if args.verbalizer:
        mapping = _json_object("--verbalizer", args.verbalizer, '{"neg": " negative", "pos": " positive"}')
        try:
            verbalizer = Verbalizer(mapping)
        except (ValueError, TypeError) as e:  # TypeError: a form that is neither a string nor a list
            raise ValueError(f"--verbalizer: {e}") from None
    name = args.dataset
    if not name.startswith("hf:") and not Path(name).is_file():
        # load_dataset says these with KeyError / TypeError: checked here, in flags.
        if name not in list_datasets():
            raise ValueError(f"no bundled data set or file {name!r}; the bundled ones are {list_datasets()}, "
                             "a file path must exist, and Hugging Face data sets are named 'hf:<name>'")
        given = [flag for flag, v in (("--format", args.format), ("--text-column", args.text_column),
                                      ("--label-column", args.label_column)) if v]
        if given:
            raise ValueError(f"{' and '.join(given)} read data files; the bundled data set {name!r} has its own "
                             "columns (change how it is scored with --template and --verbalizer)")
        with flagged():
            ds = load_dataset(name, missing=missing)
        ds.template = template or ds.template
        ds.verbalizer = verbalizer or ds.verbalizer
    else:
        # A file (or hf:): the reader takes the template's fields as the text columns
        # where --text-column is not given, and checks the labels against the verbalizer.
        options: dict = {"template": template, "verbalizer": verbalizer}
        if args.text_column:
            options["text_column"] = args.text_column[0] if len(args.text_column) == 1 else args.text_column
        if args.label_column:
            options["label_column"] = args.label_column
        with flagged():
            ds = load_dataset(name, format=args.format, missing=missing,
                              **{k: v for k, v in options.items() if v is not None})
    absent = [f for f in ds.template.fields if f not in ds.frame.columns]
    if absent:
        raise ValueError(f"the template needs the columns {absent}; the data has {list(ds.frame.columns)} "
                         "(name them with --text-column, or change --template)")
    read = ds.dropped
    ds.fields = list(ds.template.fields)
    with flagged():  # the --template's fields, which the loader may not have read as text
        ds = ds.settle_missing(missing)
    for dropped in [read] + ([ds.dropped] if ds.dropped is not read else []):
        if dropped is not None:
            print(f"calibkit: --drop-missing: {dropped}", file=sys.stderr)
    if args.limit is not None:
        ds.frame = _limit(ds.frame, ds.label_column, args)
    return ds


def _limit(frame, label_column: str, args: argparse.Namespace):
    """The --limit rows (first, --shuffle or --stratify), with a line on stderr saying which."""
    n = len(frame)
    how = "the first"
    if args.limit < n and (args.shuffle or args.stratify):
        from sklearn.model_selection import train_test_split

        labels = frame[label_column].astype(str) if args.stratify else None
        if labels is not None and labels.value_counts().min() < 2:
            raise ValueError("--stratify needs at least two rows of every class; use --shuffle")
        if labels is not None and args.limit < labels.nunique():
            raise ValueError(f"--limit {args.limit} is fewer rows than the {labels.nunique()} classes --stratify "
                             "must draw from; raise --limit")
        if labels is not None and n - args.limit < labels.nunique():
            raise ValueError(f"--stratify leaves out at least one row of each of the {labels.nunique()} classes, so "
                             f"--limit can be at most {n - labels.nunique()} of these {n} rows; lower --limit, or "
                             "leave out --limit to take them all")
        keep, _ = train_test_split(range(n), train_size=args.limit, random_state=args.seed, stratify=labels)
        frame = frame.iloc[sorted(keep)]
        how = f"a {'stratified ' if args.stratify else ''}random sample (--seed {args.seed}) of"
    frame = frame.head(args.limit).reset_index(drop=True)
    counts = ", ".join(f"{c} {k}" for c, k in frame[label_column].value_counts(sort=False).items()) \
        if label_column in frame.columns else "unlabelled"
    hint = "" if args.shuffle or args.stratify or args.limit >= n else "; --shuffle or --stratify draw a sample instead"
    args.sample = f"{how} {len(frame)} of {n} rows"
    print(f"calibkit: --limit {args.limit}: {args.sample} ({counts}){hint}", file=sys.stderr)
    return frame


def _labels(ds) -> list:
    """The data set's labels, checked against the verbalizer's classes."""
    classes = list(ds.verbalizer.classes)
    y = ds.frame[ds.label_column].tolist()
    bad = sorted({repr(v) for v in y} - {repr(c) for c in classes})
    if bad:
        raise ValueError(f"labels {', '.join(bad[:5])} are not classes of the verbalizer {classes}; give --verbalizer")
    return y


def _calibrators(names: str, classes: list, **kw) -> dict:
    from .estimator import make_calibrator

    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if kw.get("backend") is not None:
        priors = sorted({part for n in chosen for part in n.split("+")} & {"contextual", "domain"})
        if priors:
            _say(f"scoring the {' and '.join(priors)} calibration's content-free inputs")
    out = {}
    for n in chosen:
        with _naming_calibrator(n):
            out[n] = make_calibrator(n, classes, **kw)
    return out


@contextlib.contextmanager
def _naming_calibrator(name: str) -> Iterator[None]:
    """A calibrator's ValueError, said of its --calibrators entry."""
    try:
        yield
    except ValueError as e:
        message = str(e)  # a chain's message names it (calibration=, which reads --calibrators)
        raise ValueError(message if "calibration=" in message else f"--calibrators {name}: {message}") from None


def _report_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration and report")
    g.add_argument("--calibrators", default=DEFAULT_CALIBRATORS,
                   help="comma-separated: none, temperature, vector, matrix, platt, isotonic, histogram, "
                        "contextual, domain, batch; chain them with +, in the order prior correction, scaling, "
                        "binning, e.g. contextual+temperature+isotonic "
                        f"(default: {DEFAULT_CALIBRATORS})")
    g.add_argument("--calibration-fraction", type=float, default=0.5, metavar="F",
                   help="share of the examples the calibrators are fitted on; the rest is held out (default 0.5)")
    g.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the intervals (default 1000)")
    g.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="NAMES",
                   help=f"comma-separated metrics to compute, each with its bootstrap: {', '.join(DEFAULT_METRICS)} "
                        "(default: all; smooth_ece's bootstrap is the slowest)")
    g.add_argument("--out", metavar="DIR", help="report folder (default: reports/<data set name>)")


def _check_report_args(args: argparse.Namespace) -> None:
    """The report flags' values, checked before anything is loaded or scored."""
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in args.metrics if m not in DEFAULT_METRICS]
    if unknown or not args.metrics:
        raise ValueError(f"--metrics takes a comma-separated list of {', '.join(DEFAULT_METRICS)} "
                         f"(got {', '.join(map(repr, unknown)) or 'none'})")
    from .estimator import check_calibration

    chosen = [n.strip() for n in args.calibrators.split(",") if n.strip()]
    if not chosen:
        raise ValueError("--calibrators needs at least one name, e.g. contextual,temperature")
    for n in chosen:
        with _naming_calibrator(n):
            check_calibration(n)
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1 (got {args.bootstrap}); 1000 is usual")
    if not 0 < args.calibration_fraction < 1:
        raise ValueError(f"--calibration-fraction must lie between 0 and 1 (got {args.calibration_fraction})")


def _evaluate(scores, y: list, calibrators: dict, classes: list, args: argparse.Namespace, info: dict):
    from .report import evaluate

    _say(f"fitting {len(calibrators)} calibrator(s) and bootstrapping {', '.join(args.metrics)} "
         f"(--bootstrap {args.bootstrap}, --metrics to choose)")
    return evaluate(scores, y, calibrators, classes=classes, calibration_fraction=args.calibration_fraction,
                    seed=args.seed, n_boot=args.bootstrap, metrics=args.metrics, info=info)


def _finish_report(ev, out: str, title: str) -> None:
    """Write the report of an Evaluation or a Comparison; print its table and where it is."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .comparison import Comparison
    from .report import write_comparison_report, write_report

    _say(f"writing the report to {out}")
    write = write_comparison_report if isinstance(ev, Comparison) else write_report
    folder = write(ev, out, title=title)
    import pandas as pd

    wide = ("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 60) if write is not write_report \
        else ("display.width", 200, "display.max_columns", 20)
    with pd.option_context(*wide):
        print(ev.formatted().to_string())
    print(f"\nreport: {folder / 'index.html'}")


# -- score -----------------------------------------------------------------------------
def _score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a data set: class log-probabilities per example",
        description="Score every example of a data set with its prompt template and verbalizer, "
        "print accuracy, the probability mass on the label set and a few rows, and optionally "
        "write the scores (CSV or Parquet) for `calibkit calibrate`. The scores file also holds "
        "the content-free inputs (N/A, '', [MASK]) that contextual calibration needs, marked "
        "row=content-free.",
        epilog="example: calibkit score sentiment --head 5 --out scores.csv",
    )
    _data_args(p)
    _seed_arg(p)
    p.add_argument("--head", type=int, default=5, help="rows to print (default 5)")
    p.add_argument("--out", metavar="FILE", help="write the scores here (.csv or .parquet)")
    _backend_args(p, ray=True)
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd

    from .label_scores import check_scores_path, write_scores
    from .scoring import score

    if args.out:
        try:
            check_scores_path(args.out)
        except ValueError as e:
            raise ValueError(f"--out {e}") from None
    ds = _load(args)
    y = _labels(ds)
    backend = _backend(args)
    _check_k(args, backend)
    _say(f"scoring {len(ds.frame)} examples with {backend.model_name} (--method {args.method})")
    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
    table = s.to_frame()
    acc = float(np.mean([p == t for p, t in zip(s.predict(), y)]))
    print(f"{ds.name}: {len(s)} examples ({args.sample}), model {backend.model_name}, method {args.method}")
    print(f"accuracy       {acc:.3f}")
    print(f"label mass     median {np.median(s.label_mass):.4g}  (min {s.label_mass.min():.3g}, max {s.label_mass.max():.3g})")
    print(f"censored       {int(s.censored.sum())} of {s.censored.size} entries")
    print(f"questions      {s.provenance['requests']} asked of the model, {s.provenance['cache_hits']} from the cache")
    frame = ds.frame.reset_index(drop=True)
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        print(pd.concat([frame[ds.fields + [ds.label_column]], table], axis=1).head(args.head).to_string(index=False))
    if args.out:
        from .scoring import CONTENT_FREE, content_free_scores

        cf = content_free_scores(ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
        cf_frame = pd.DataFrame({f: list(CONTENT_FREE) for f in ds.fields})
        write_scores(args.out, s, frame, label_column=ds.label_column, content_free=cf, content_free_frame=cf_frame)
        print(f"wrote {args.out}")
    return 0


# -- eval ------------------------------------------------------------------------------
def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="the main job: score a data set, fit calibrators, write a calibration report",
        description="Score a data set, fit each calibrator on a calibration split, evaluate all on the "
        "held-out rest (accuracy, NLL, Brier, ECE, smooth ECE, each with a bootstrap interval; --metrics "
        "chooses) and write a report folder: metrics.csv, metrics.md, probabilities.csv (with each calibrator's "
        "prediction), confusion_matrix.csv, evaluation.json (the settings), reliability diagrams (PNG, per class "
        "too for more than two classes) and index.html. With no arguments: the embedded model on the bundled sentiment set.\n\n"
        "A study: repeat --template, --verbalizer or --model, and every template × verbalizer × model is scored "
        "once (the response cache makes reruns free) and compared on the same held-out examples in one report: "
        "comparison.csv and comparison.md (each metric with its interval, its paired difference from --baseline "
        "with a paired bootstrap interval, the coverage and size of conformal sets at --alpha, AURC), "
        "probabilities.csv, evaluation.json, risk_coverage.png, reliability.png and index.html. --baseline or "
        "--alpha make that report for one configuration too. --config FILE.toml says the same as the flags, "
        "for a study that lives in a repository; flags given on the command line win over the file.",
        epilog="examples:\n  calibkit eval\n  calibkit eval ../shared/data/sst2/dev.txt --limit 300 "
        "--calibrators contextual,temperature\n  calibkit eval agnews.csv --api-base $ACS_API_BASE --model llama-8b\n"
        "  calibkit eval sentiment --template 'Review: {text}\\nSentiment:' --template '{text}\\nThe review is' "
        "--calibrators temperature,contextual\n  calibkit eval --config study.toml\n\n"
        "a study file (TOML; paths in it are relative to its folder):\n"
        '  dataset = "sentiment"\n  limit = 200\n  stratify = true\n  calibrators = ["contextual", "temperature"]\n'
        '  baseline = "plain"          # a configuration (its uncalibrated row) or a row, e.g. "plain · temperature"\n'
        '  [templates]\n  plain = "Review: {text}\\nSentiment:"\n  question = "{text}\\nWas that review positive '
        'or negative? Answer:"\n  [verbalizers.words]\n  negative = " negative"\n  positive = " positive"\n\n'
        f"the file's keys: {', '.join(_CONFIG_KEYS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_args(p, several=True)
    _report_args(p)
    g = p.add_argument_group("comparing configurations")
    g.add_argument("--baseline", metavar="NAME",
                   help="the row the others are compared with (paired differences): a configuration, e.g. t2 "
                        "(its uncalibrated row), or a row, e.g. 't1 · v1 · gemma-3-270m · temperature' ('/' may stand "
                        "for ' · '; parts that the rest make clear may be left out); default: the first "
                        "configuration, uncalibrated")
    g.add_argument("--alpha", type=float, metavar="A",
                   help="the conformal sets' miss rate: each set holds the true class for at least 1 - A of examples "
                        "(default 0.1; pip install 'calibkit[conformal]')")
    g.add_argument("--config", metavar="FILE.toml",
                   help="read the study from a TOML file whose keys are the flags' names (templates, verbalizers, "
                        "models in the plural, each a list or a table of name = value); flags given here win")
    _seed_arg(p)
    _backend_args(p, ray=True, several=True)
    # Flags given on the command line win over --config's file, and the file over the defaults:
    # so the parser leaves a flag not given as None, and _eval_settings fills it in.
    for dest in _CONFIG_KEYS.values():
        _EVAL_DEFAULTS[dest] = p.get_default(dest)
    p.set_defaults(func=_cmd_eval, **{dest: None for dest in _CONFIG_KEYS.values()})


# The keys of an eval --config file, and the flags' destinations they set.
_CONFIG_KEYS = {
    "dataset": "dataset", "format": "format", "text_column": "text_column", "label_column": "label_column",
    "limit": "limit", "shuffle": "shuffle", "stratify": "stratify", "drop_missing": "drop_missing",
    "templates": "template", "verbalizers": "verbalizer", "method": "method", "k": "k",
    "calibrators": "calibrators", "calibration_fraction": "calibration_fraction", "bootstrap": "bootstrap",
    "metrics": "metrics", "out": "out", "baseline": "baseline", "alpha": "alpha", "seed": "seed",
    "models": "model", "api_base": "api_base", "backend": "backend",
}
_EVAL_DEFAULTS: dict[str, object] = {}
_CHOICES = {"method": ("auto", "topk", "exact"), "backend": ("local", "hf")}


def _eval_settings(args: argparse.Namespace) -> None:
    """Fill in what the command line left out: from --config's file, then the defaults."""
    args.template_names = args.verbalizer_names = None
    if args.config:
        _read_config(args)
    for dest, default in _EVAL_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def _read_config(args: argparse.Namespace) -> None:
    import json

    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("--config reads TOML: on Python 3.10, pip install tomli") from None
    path = Path(args.config)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config {path} is not TOML: {e}") from None
    where = f"--config {path}"
    unknown = [k for k in table if k not in _CONFIG_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key {', '.join(map(repr, unknown))}; the keys are: {', '.join(_CONFIG_KEYS)}")

    def kind(key: str, value, types, what: str):
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise ValueError(f"{where}: {key} must be {what} (got {value!r})")
        return value

    def strings(key: str, value) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise ValueError(f"{where}: {key} must be a string or a list of strings (got {value!r})")

    def named(key: str, value, item) -> tuple[list, list[str] | None]:
        """A list of values (named later, t1, t2 ...), or a table of name = value."""
        if isinstance(value, dict) and value and all(isinstance(v, (str, dict)) for v in value.values()) \
                and not (key == "verbalizers" and not any(isinstance(v, dict) for v in value.values())):
            return [item(f"{key}.{n}", v) for n, v in value.items()], [str(n) for n in value]
        if isinstance(value, list) and value:
            return [item(f"{key}[{i}]", v) for i, v in enumerate(value)], None
        if key == "verbalizers" and isinstance(value, dict) and value:  # one verbalizer, as a table
            return [item(key, value)], None
        if isinstance(value, str):
            return [item(key, value)], None
        raise ValueError(f"{where}: {key} must be a list, or a table of name = value (got {value!r})")

    def template(key: str, value) -> str:
        return kind(key, value, (str,), "a template string, e.g. \"Review: {text}\\nSentiment:\"")

    def verbalizer(key: str, value) -> str:
        if isinstance(value, dict):
            return json.dumps(value)
        return kind(key, value, (str,), 'a table of class = form(s), e.g. {negative = " negative", positive = '
                                        '" positive"}, or that as a JSON string')

    base = path.parent
    for key, value in table.items():
        dest = _CONFIG_KEYS[key]
        if getattr(args, dest) is not None:
            continue  # the command line's
        if key in ("limit", "k", "bootstrap", "seed"):
            value = kind(key, value, (int,), "an integer")
        elif key in ("alpha", "calibration_fraction"):
            value = float(kind(key, value, (int, float), "a number"))
        elif key in ("shuffle", "stratify", "drop_missing"):
            value = kind(key, value, (bool,), "true or false")
        elif key in ("calibrators", "metrics"):
            value = ",".join(strings(key, value))
        elif key == "text_column":
            value = strings(key, value)
        elif key == "models":
            value = strings(key, value)
        elif key == "templates":
            value, args.template_names = named(key, value, template)
        elif key == "verbalizers":
            value, args.verbalizer_names = named(key, value, verbalizer)
        else:
            value = kind(key, value, (str,), "a string")
            if key in _CHOICES and value not in _CHOICES[key]:
                raise ValueError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])} (got {value!r})")
            if key == "out" or (key == "dataset" and (base / value).is_file()):
                value = str(base / value)
        setattr(args, dest, value)


def _with(args: argparse.Namespace, **values) -> argparse.Namespace:
    """A copy of args with some values changed."""
    return argparse.Namespace(**{**vars(args), **values})


def _cmd_eval(args: argparse.Namespace) -> int:
    _eval_settings(args)
    _check_report_args(args)
    templates, verbalizers, models = args.template or [None], args.verbalizer or [None], args.model or [None]
    if len(templates) * len(verbalizers) * len(models) > 1 or args.baseline is not None or args.alpha is not None:
        return _eval_study(args, templates, verbalizers, models)
    return _eval_one(_with(args, template=templates[0], verbalizer=verbalizers[0], model=models[0]))


def _two_classes(y: list, args: argparse.Namespace) -> None:
    if len({repr(v) for v in y}) < 2:
        raise ValueError(f"all {len(y)} examples are labelled {y[0]!r}, and calibrating needs two classes or more"
                         + (": --limit took the first rows; add --shuffle or --stratify"
                            if args.limit and not (args.shuffle or args.stratify) else ""))


def _eval_one(args: argparse.Namespace) -> int:
    """One template × verbalizer × model: the calibration report."""
    from .report import slug
    from .scoring import score

    ds = _load(args)
    y = _labels(ds)
    _two_classes(y, args)
    backend = _backend(args)
    _check_k(args, backend)
    classes = list(ds.verbalizer.classes)
    texts = [str(v) for f in ds.fields for v in ds.frame[f]]
    cals = _calibrators(args.calibrators, classes, backend=backend, template=ds.template,
                        verbalizer=ds.verbalizer, texts=texts, method=args.method, k=args.k)
    _say(f"scoring {len(ds.frame)} examples with {backend.model_name} (--method {args.method})")
    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
    info = {"data": ds.name, "sample": args.sample, "model": backend.model_name, "model settings": backend.identity,
            "method": args.method, "template": ds.template.template, "verbalizer": ds.verbalizer.mapping,
            "median label mass": f"{float(np.median(s.label_mass)):.4g}"}
    ev = _evaluate(s, y, cals, classes, args, info)
    print(f"{ds.name}: {len(s)} examples ({ev.info['n_calibration']} to calibrate, {ev.info['n_evaluation']} held out), "
          f"model {backend.model_name}")
    out = args.out or os.path.join("reports", slug(os.path.basename(str(ds.name))))
    _finish_report(ev, out, f"calibkit eval: {ds.name}")
    return 0


def _eval_study(args: argparse.Namespace, templates: list, verbalizers: list, models: list) -> int:
    """Every template × verbalizer × model, each scored once, compared in one report."""
    import importlib.util
    import io
    import itertools
    import json

    from .comparison import SEPARATOR, baseline_row, compare
    from .report import slug
    from .scoring import score

    if args.alpha is not None and not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must lie between 0 and 1: the conformal sets miss the truth at most that often "
                         f"(got {args.alpha}; 0.1 is usual)")
    alpha = 0.1 if args.alpha is None else args.alpha
    if importlib.util.find_spec("mapie") is None:
        raise ImportError("the comparison's conformal sets (--alpha) are MAPIE's: pip install 'calibkit[conformal]'")

    def verbalizer_key(v):
        try:
            return json.dumps(json.loads(v), sort_keys=True)
        except (TypeError, json.JSONDecodeError):
            return v  # not JSON: _load says so, naming --verbalizer

    for flag, values in (("--template", [unescape(t) for t in templates if t is not None]),
                         ("--verbalizer", [verbalizer_key(v) for v in verbalizers if v is not None]),
                         ("--model", [m for m in models if m is not None])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{flag} {twice[0]!r} is given twice; give each once")
    t_names = args.template_names or [f"t{i}" for i in range(1, len(templates) + 1)]
    v_names = args.verbalizer_names or [f"v{i}" for i in range(1, len(verbalizers) + 1)]

    # Every pair's data, loaded (and its flags checked) before any model is touched.
    data: dict[tuple[str, str], object] = {}
    y = classes = None
    for (tn, t), (vn, v) in itertools.product(zip(t_names, templates), zip(v_names, verbalizers)):
        quiet = contextlib.redirect_stderr(io.StringIO()) if data else contextlib.nullcontext()  # said once
        ns = _with(args, template=t, verbalizer=v)
        try:
            with quiet:
                ds = _load(ns)
            labels = _labels(ds)
        except ValueError as e:
            raise ValueError(f"{tn}{SEPARATOR}{vn}: {e}") from None
        if y is None:
            y, classes, sample = labels, list(ds.verbalizer.classes), ns.sample
            _two_classes(y, args)
        elif list(ds.verbalizer.classes) != classes:
            raise ValueError(f"--verbalizer {vn} has the classes {list(ds.verbalizer.classes)} and {v_names[0]} "
                             f"{classes}; the configurations of a comparison score the same classes, in one order")
        elif [repr(v) for v in labels] != [repr(v) for v in y]:
            raise ValueError(f"{tn}{SEPARATOR}{vn} reads other rows than {t_names[0]}{SEPARATOR}{v_names[0]} "
                             "(--drop-missing drops the rows missing a template's fields); compare templates of "
                             "the same fields, or fill the missing values in")
        data[(tn, vn)] = ds

    # The models' names; the default model's is known once it is loaded.
    first = _backend(_with(args, model=None)) if models == [None] else None
    m_names = _model_names(models, first)
    cal_names = [n.strip() for n in args.calibrators.split(",") if n.strip()]
    configs = [(tn, vn, mn) for mn in m_names for (tn, vn) in data]
    baseline = args.baseline
    if baseline is not None:
        baseline = baseline if "·" in baseline else baseline.replace("/", SEPARATOR)
    base = baseline_row(baseline, {c: cal_names for c in configs})

    scores, cals, masses, about_models = {}, {}, {}, {}
    for m, mn in zip(models, m_names):
        backend = first or _backend(_with(args, model=m))
        first = None
        _check_k(args, backend)
        about_models[mn] = {"model": backend.model_name, "settings": backend.identity}
        for (tn, vn), ds in data.items():
            config = (tn, vn, mn)
            texts = [str(v) for f in ds.fields for v in ds.frame[f]]
            cals[config] = _calibrators(args.calibrators, classes, backend=backend, template=ds.template,
                                        verbalizer=ds.verbalizer, texts=texts, method=args.method, k=args.k)
            _say(f"scoring {len(ds.frame)} examples: {SEPARATOR.join(config)} (--method {args.method})")
            s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
            scores[config] = s
            masses[SEPARATOR.join(config)] = f"{float(np.median(s.label_mass)):.4g}"
        del backend
    name = next(iter(data.values())).name
    info = {
        "data": name, "sample": sample, "method": args.method,
        "templates": {tn: data[(tn, v_names[0])].template.template for tn in t_names},
        "verbalizers": {vn: data[(t_names[0], vn)].verbalizer.mapping for vn in v_names},
        "models": about_models, "median label mass": masses,
    }
    _say(f"fitting {len(cal_names)} calibrator(s) on {len(configs)} configuration(s), bootstrapping "
         f"{', '.join(args.metrics)} and their differences from {base} (--bootstrap {args.bootstrap}, --metrics to "
         f"choose), conformal sets at --alpha {alpha:g}")
    cmp = compare(scores, y, cals, classes=classes, factors=["template", "verbalizer", "model"], baseline=base,
                  calibration_fraction=args.calibration_fraction, seed=args.seed, n_boot=args.bootstrap,
                  metrics=args.metrics, alpha=alpha, info=info)
    print(f"{name}: {len(y)} examples ({cmp.info['n_calibration']} to calibrate, {cmp.info['n_evaluation']} held "
          f"out), {len(configs)} configuration(s) × {len(cal_names) + 1} calibrators (uncalibrated too); "
          f"baseline {base}")
    out = args.out or os.path.join("reports", slug(os.path.basename(str(name))))
    _finish_report(cmp, out, f"calibkit eval: {name}")
    return 0


def _model_names(models: list, loaded) -> list[str]:
    """Short, distinct names of the --model values (a path's file name without .gguf, a hub
    name's last part), or the loaded default model's."""
    names = []
    for m in models:
        full = loaded.model_name if m is None else m
        short = Path(str(full).rstrip("/")).name
        short = short[: -len(".gguf")] if short.lower().endswith(".gguf") else short
        base, k = short or "model", 2
        while short in names:
            short, k = f"{base}-{k}", k + 1
        names.append(short)
    return names


# -- calibrate -------------------------------------------------------------------------
def _calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="a scores file (from calibkit score) to calibrated probabilities and a report",
        description="Read a scores file written by `calibkit score --out`, fit each calibrator on a "
        "calibration split, and write the held-out probabilities and the report (as calibkit eval). "
        "Contextual calibration uses the file's content-free rows; 'domain' needs the model and is "
        "only available in calibkit eval.",
        epilog="example: calibkit score sentiment --out scores.csv && calibkit calibrate scores.csv --out report/",
    )
    p.add_argument("scores", help="a .csv or .parquet file from calibkit score --out")
    p.add_argument("--label-column", help="the labels' column (default: the one the file records, else label)")
    _report_args(p)
    _seed_arg(p)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .label_scores import read_scores
    from .report import slug

    _check_report_args(args)
    path = args.scores
    f = read_scores(path, label_column=args.label_column)
    if f.labels is None:
        raise ValueError(f"{path} has no 'label' column (its columns are {[str(c) for c in f.frame.columns]}); "
                         "name the labels' column with --label-column")
    names = {part.strip() for n in args.calibrators.split(",") for part in n.split("+")}
    if "domain" in names:
        raise ValueError("--calibrators domain draws in-domain words and scores them with the model; "
                         "use calibkit eval, which has the model")
    if "contextual" in names and f.content_free is None:
        raise ValueError(f"--calibrators contextual needs the scores of content-free inputs, and {path} has no "
                         "row=content-free rows; write the file with calibkit score --out")
    classes = list(f.scores.classes)
    content_free = f.content_free.logprobs if f.content_free is not None else None
    cals = _calibrators(args.calibrators, classes, content_free=content_free)
    ev = _evaluate(f.scores, f.labels, cals, classes, args, {"scores": path})
    stem = os.path.splitext(os.path.basename(path))[0]
    _finish_report(ev, args.out or os.path.join("reports", slug(stem)), f"calibkit calibrate: {stem}")
    return 0


# -- forms -----------------------------------------------------------------------------
def _forms_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forms",
        help="find label words: rank candidate forms per class by cross-validated worth",
        description="Rank candidate label words (forms) per class for a data set's template: the verbalizer's "
        "own forms (or --candidates) and, with the embedded model or --backend hf, the model's most telling "
        "tokens for each class from one pass over the whole vocabulary (--proposed per class). Each is judged "
        "by the cross-validated NLL and accuracy of the verbalizer it makes after --calibration (ck.search_forms). "
        "Prints every candidate tried, best first within each class, and the verbalizer found as JSON for "
        "--verbalizer.",
        epilog="examples:\n  calibkit forms sentiment --limit 120 --stratify\n"
        "  calibkit forms sentiment --candidates '{\"negative\": [\" bad\", \" awful\"], \"positive\": [\" good\"]}'\n"
        "  calibkit forms data.csv --api-base $ACS_API_BASE --model llama-8b   # ranks the verbalizer's forms",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_args(p)
    g = p.add_argument_group("search")
    g.add_argument("--candidates", metavar="JSON",
                   help="classes to candidate forms, e.g. '{\"neg\": [\" bad\", \" awful\"], \"pos\": [\" good\"]}' "
                        "(default: the verbalizer's forms, --verbalizer or the data set's)")
    g.add_argument("--proposed", type=int, default=10, metavar="N",
                   help="words the model proposes per class from its whole vocabulary (default 10; 0: none; "
                        "a completions API proposes none)")
    g.add_argument("--calibration", default="contextual+temperature", metavar="NAME",
                   help="the correction each candidate verbalizer is judged after, a --calibrators name "
                        "(default contextual+temperature)")
    g.add_argument("--cv", type=int, default=5, metavar="K", help="folds of the cross-validation (default 5)")
    g.add_argument("--select-by", choices=("nll", "accuracy"), default="nll",
                   help="rank by cross-validated NLL (ties by accuracy) or accuracy (ties by NLL); default nll")
    g.add_argument("--out", metavar="FILE", help="write the table here (.csv)")
    _seed_arg(p)
    _backend_args(p)
    p.set_defaults(func=_cmd_forms)


def _cmd_forms(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from .estimator import check_calibration
    from .form_search import search_forms, sees_vocabulary

    if args.proposed < 0:
        raise ValueError(f"--proposed must be 0 or more (got {args.proposed})")
    if args.cv < 2:
        raise ValueError(f"--cv must be at least 2 (got {args.cv})")
    try:
        check_calibration(args.calibration)
    except ValueError as e:  # said of --calibration (calibration= would read as --calibrators)
        said = str(e).replace(f"calibration={args.calibration!r}: ", "").replace(f" in calibration={args.calibration!r}", "")
        raise ValueError(f"--calibration {args.calibration}: {said}") from None
    if args.out and not args.out.endswith(".csv"):
        raise ValueError(f"--out writes a .csv file (got {args.out!r})")
    candidates = None
    if args.candidates:
        candidates = _json_object("--candidates", args.candidates, '{"neg": [" bad"], "pos": [" good"]}')
    ds = _load(args)
    y = ds.frame[ds.label_column].tolist()
    if candidates is None:
        candidates = ds.verbalizer
        y = _labels(ds)
    elif set(map(str, candidates)) == set(map(str, ds.verbalizer.classes)):
        # JSON keys are strings: the data set's classes as they are (an int label stays an int)
        by_name = {str(c): c for c in ds.verbalizer.classes}
        candidates = {by_name[k]: v for k, v in candidates.items()}
    backend = _backend(args)
    proposing = sees_vocabulary(backend) and args.proposed > 0
    _say(f"searching label words on {len(ds.frame)} examples with {backend.model_name}"
         + (f" ({args.proposed} proposed per class from the whole vocabulary)" if proposing else ""))
    try:
        found = search_forms(ds.frame[ds.fields], y, ds.template, backend, candidates=candidates,
                             n_proposed=args.proposed, calibration=args.calibration, cv=args.cv,
                             select_by=args.select_by, random_state=args.seed)
    except ValueError as e:
        message = str(e).replace("give candidates", "give --candidates")
        raise ValueError(message.replace("candidates=", "--candidates ")) from None
    print(f"{ds.name}: {len(ds.frame)} examples ({args.sample}), model {backend.model_name}, "
          f"--calibration {args.calibration}, {args.cv}-fold cross-validated")
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(found.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    mapping = {str(c): f for c, f in zip(found.verbalizer.classes, (fs[0] for fs in found.verbalizer.forms))}
    print(f"\nfound: --verbalizer '{json.dumps(mapping, ensure_ascii=False)}'")
    if args.out:
        found.table.to_csv(args.out, index=False, float_format="%.6g")
        print(f"wrote {args.out}")
    return 0


# -- serve and keys --------------------------------------------------------------------
def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the ACS completions API over local models (llama.cpp or transformers)",
        description="Serve POST /v1/completions (and /completions), GET /v1/models, /health and "
        "/openapi.json over the embedded model or GGUF files (--backend local, llama.cpp), or any "
        "transformers checkpoint (--backend hf), following the ACS API's rules. "
        "Without --keys-file it serves loopback only, without authentication.",
        epilog="examples:\n  calibkit serve --model llama-8b --keys-file keys.json\n"
        "  calibkit serve --model tiny=models/tiny.gguf --port 8080 --no-auth\n"
        "  calibkit serve --backend hf --model gemma=google/gemma-3-270m --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", default=[], metavar="SPEC",
                   help="NAME=PATH.gguf serves that file as NAME (with --backend hf PATH may also be a checkpoint "
                        "folder or a hub name); NAME alone serves the embedded model (gemma-3-270m; with --backend hf "
                        "under transformers) as NAME; "
                        "repeat for several (default: the embedded model under its own name)")
    from .server.run import BACKENDS

    p.add_argument("--backend", default="local", choices=tuple(BACKENDS), metavar="{" + ",".join(BACKENDS) + "}",
                   help="what runs the models: " + "; ".join(f"{k}: {v}" for k, v in BACKENDS.items())
                        + " (default local)")
    p.add_argument("--device", default=None,
                   help="--backend hf only: torch device, auto (CUDA where there is a GPU, else cpu; the default), "
                        "cpu, cuda or cuda:N")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--keys-file", metavar="PATH", help="accept exactly the API keys in this file (calibkit keys create)")
    p.add_argument("--no-auth", action="store_true", help="accept any request, on any host: only where you mean it")
    p.add_argument("--n-ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads: llama.cpp's, or torch's with --backend hf (default: all cores)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    from .server.config import ServerConfig

    g = p.add_argument_group("limits")
    for f in dataclasses.fields(ServerConfig):
        if f.name in _SERVE_LIMITS:
            g.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default, metavar="N",
                           help=f"{f.metadata['help']} (default {f.default})")
    p.set_defaults(func=_cmd_serve)


_SERVE_LIMITS = ("max_body_bytes", "max_prompts", "max_tokens_limit", "max_n", "max_request_tokens", "queue_size",
                 "batch_size", "body_timeout")


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server.config import ServerConfig
    from .server.run import serve

    config = ServerConfig(**{name: getattr(args, name) for name in _SERVE_LIMITS})
    serve(args.model, host=args.host, port=args.port, keys_file=args.keys_file, no_auth=args.no_auth,
          config=config, n_ctx=args.n_ctx, n_threads=args.threads, log_level=args.log_level,
          backend=args.backend, device=args.device)
    return 0


def _keys_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="create, list and revoke the API keys calibkit serve accepts",
        description="Manage a keys file for calibkit serve --keys-file. The file stores only salted "
        "hashes; create prints the new key once, alone on its last line of output.",
        epilog="example: calibkit keys create --keys-file keys.json --name alice",
    )
    ks = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = ks.add_parser("create", help="make a new key and print it once")
    c.add_argument("--name", default="", help="a note to recognise the key by")
    ks.add_parser("list", help="list the keys' ids, names and creation times")
    r = ks.add_parser("revoke", help="remove a key by id; the server stops accepting it at once")
    r.add_argument("id", help="the key's id, as calibkit keys list shows it")
    for q in (c, ks.choices["list"], r):
        q.add_argument("--keys-file", required=True, metavar="PATH", help="the keys file")
    p.set_defaults(func=_cmd_keys)


def _cmd_keys(args: argparse.Namespace) -> int:
    from .server.keys import create_key, list_keys, revoke_key

    if args.action == "create":
        key, entry = create_key(args.keys_file, name=args.name)
        print(f"created key {entry['id']} in {args.keys_file}; it is shown once, here:")
        print(key)
    elif args.action == "list":
        entries = list_keys(args.keys_file)
        for e in entries:
            print(f"{e['id']}  {e.get('created', '')}  {e.get('name', '')}")
        if not entries:
            print(f"no keys in {args.keys_file}; make one with: calibkit keys create --keys-file {args.keys_file}")
    else:
        try:
            e = revoke_key(args.keys_file, args.id)
        except KeyError as err:  # no key with that id: a user error, said in its own words
            raise ValueError(err.args[0] if err.args else f"no key with id {args.id!r}") from None
        print(f"revoked {e['id']} ({e.get('name', '')})")
    return 0


_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _peek_parser,
    _score_parser,
    _eval_parser,
    _forms_parser,
    _calibrate_parser,
    _serve_parser,
    _keys_parser,
]


def _version() -> str:
    from .version import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``calibkit`` argument parser, every subcommand in it.

    >>> build_parser().parse_args(["score", "data.jsonl", "--format", "cb", "-k", "5"]).format
    'cb'
    """
    parser = argparse.ArgumentParser(
        prog="calibkit",
        description="Classify text with base language models by next-token probabilities, and calibrate them.",
    )
    parser.add_argument("--version", action="version", version=f"calibkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def _user_error(e: BaseException) -> bool:
    """Whether an exception is the user's to fix (one line) rather than a bug (a traceback)."""
    if isinstance(e, USER_ERRORS):
        return True
    from .cache import CacheError
    from .datasets import HFUnavailableError

    if isinstance(e, (HFUnavailableError, CacheError)):  # CacheError: a full disk, a damaged cache file
        return True
    # The library's own "install this extra" errors, not an import that a bug broke.
    return isinstance(e, ImportError) and "pip install" in str(e)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``calibkit`` command; returns the exit status (0, 1 for a user error, 2 for usage).

    >>> main(["calibrate", "no-such-file.csv"])  # says on stderr: no scores file at 'no-such-file.csv'; ...
    1
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if not _user_error(e):
            raise
        message = flag_words(str(e))
        if getattr(e, "param", None) == "logprobs" and getattr(args, "k", None) is not None:
            message = f"-k {args.k}: {message}"  # the request field that -k sets
        print(f"calibkit {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

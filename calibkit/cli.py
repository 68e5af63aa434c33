"""The ``calibkit`` command.

    calibkit peek "The capital of France is" -k 5     # what the model almost said
    calibkit score sentiment --out scores.csv         # score a data set, print a summary
    calibkit eval                                     # the main job: a calibration report
    calibkit calibrate scores.csv                     # scores file -> calibrated probabilities, report

Each subcommand lives in one ``_cmd_*`` function with its parser beside it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Sequence

import numpy as np

__all__ = ["main"]


def _backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--api-base",
        metavar="URL",
        help="a completions API base URL (e.g. $ACS_API_BASE); default: the embedded model",
    )
    g.add_argument("--api-key", metavar="KEY", help="API key (default: $ACS_API_KEY)")
    g.add_argument("--model", metavar="NAME", help="model name at the API, or a GGUF path for the embedded backend")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")


def _backend(args: argparse.Namespace):  # -> Backend
    from .backends import Client, LocalModel

    cache = False if args.no_cache else None
    if args.api_base:
        key = args.api_key or os.environ.get("ACS_API_KEY")
        return Client(args.api_base, key, model=args.model, cache=cache)
    return LocalModel(args.model, cache=cache)


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
        raise SystemExit("calibkit peek: -k must be at least 1")
    backend = _backend(args)
    req = backend.make_request(args.prompt, max_tokens=1, logprobs=args.k, temperature=0)
    resp = backend.complete(req)
    top = resp.choices[0].logprobs.top_logprobs[0]
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[: args.k]
    print(f"{backend.model_name}: top-{len(ranked)} next tokens after {args.prompt!r}")
    print(f"{'rank':>4}  {'token':<24} {'logprob':>9} {'prob':>8}")
    for i, (tok, lp) in enumerate(ranked, 1):
        print(f"{i:>4}  {tok!r:<24} {lp:>9.4f} {math.exp(lp):>8.4f}")
    print(f"mass in the top {len(ranked)}: {sum(math.exp(v) for _, v in ranked):.4f}")
    return 0


# -- data and calibrators shared by score / eval / calibrate ------------------------------
DEFAULT_CALIBRATORS = "contextual,batch,temperature,contextual+temperature"


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("dataset", nargs="?", default="sentiment",
                   help="a bundled data set name or a data file (default: sentiment)")
    g.add_argument("--format", help="the data file's format when its name does not tell (sst2, agnews, trec, "
                                    "superglue, csv, tsv, jsonl)")
    g.add_argument("--text-column", action="append", metavar="NAME",
                   help="a CSV/JSONL file's text column; repeat for a multi-field template")
    g.add_argument("--label-column", metavar="NAME", help="a CSV/JSONL file's label column (default: label)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    g.add_argument("--template", help="prompt template overriding the data set's, e.g. 'Review: {text}\\nSentiment:'")
    g.add_argument("--verbalizer", metavar="JSON",
                   help='classes to surface forms overriding the data set\'s, e.g. \'{"neg": " negative", "pos": " positive"}\'')
    g.add_argument("--method", choices=("auto", "topk", "exact"), default="auto", help="scoring method (default auto)")


def _load(args: argparse.Namespace):
    import json

    from .datasets import load_dataset
    from .templates import PromptTemplate, Verbalizer

    options = {}
    if args.text_column:
        options["text_column"] = args.text_column[0] if len(args.text_column) == 1 else args.text_column
    if args.label_column:
        options["label_column"] = args.label_column
    ds = load_dataset(args.dataset, format=args.format, **options)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        ds.frame = ds.frame.head(args.limit).reset_index(drop=True)
    if args.template:
        ds.template = PromptTemplate(args.template.encode().decode("unicode_escape"))
    if args.verbalizer:
        try:
            ds.verbalizer = Verbalizer(json.loads(args.verbalizer))
        except json.JSONDecodeError as e:
            raise ValueError(f"--verbalizer must be a JSON object of class -> form(s): {e}") from e
    missing = [f for f in ds.template.fields if f not in ds.frame.columns]
    if missing:
        raise ValueError(f"the template needs the columns {missing}; the data has {list(ds.frame.columns)}")
    ds.fields = list(ds.template.fields)
    return ds


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
    if not chosen:
        raise ValueError("--calibrators needs at least one name, e.g. contextual,temperature")
    return {n: make_calibrator(n, classes, **kw) for n in chosen}


def _report_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration and report")
    g.add_argument("--calibrators", default=DEFAULT_CALIBRATORS,
                   help="comma-separated: none, temperature, vector, matrix, platt, isotonic, histogram, "
                        "contextual, domain, batch; join two with + to chain them "
                        f"(default: {DEFAULT_CALIBRATORS})")
    g.add_argument("--calibration-fraction", type=float, default=0.5,
                   help="share of the examples the calibrators are fitted on; the rest is held out (default 0.5)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split and the bootstrap (default 0)")
    g.add_argument("--out", metavar="DIR", help="report folder (default: reports/<data set name>)")


def _finish_report(ev, out: str, title: str) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .report import write_report

    folder = write_report(ev, out, title=title)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
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
    p.add_argument("--head", type=int, default=5, help="rows to print (default 5)")
    p.add_argument("--out", metavar="FILE", help="write the scores here (.csv or .parquet)")
    _backend_args(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd

    from .scoring import score

    ds = _load(args)
    y = _labels(ds)
    backend = _backend(args)
    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method)
    table = s.to_frame()
    acc = float(np.mean([p == t for p, t in zip(s.predict(), y)]))
    print(f"{ds.name}: {len(s)} examples, model {backend.model_name}, method {args.method}")
    print(f"accuracy       {acc:.3f}")
    print(f"label mass     median {np.median(s.label_mass):.4g}  (min {s.label_mass.min():.3g}, max {s.label_mass.max():.3g})")
    print(f"censored       {int(s.censored.sum())} of {s.censored.size} entries")
    print(f"requests       {s.provenance['requests']} sent, {s.provenance['cache_hits']} from the cache")
    frame = ds.frame.reset_index(drop=True)
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        print(pd.concat([frame[ds.fields + [ds.label_column]], table], axis=1).head(args.head).to_string(index=False))
    if args.out:
        from .calibration.prior import CONTENT_FREE  # the inputs contextual calibration scores

        cf_frame = pd.DataFrame({f: list(CONTENT_FREE) for f in ds.fields})
        cf = score(cf_frame, ds.template, ds.verbalizer, backend, method=args.method, check=False)
        out = pd.concat(
            [
                pd.concat([frame, table], axis=1).assign(row="example"),
                pd.concat([cf_frame, cf.to_frame()], axis=1).assign(row="content-free"),
            ],
            ignore_index=True,
        )
        if args.out.endswith(".parquet"):
            _need_pyarrow()
            out.to_parquet(args.out, index=False)
        else:
            out.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


# -- eval ------------------------------------------------------------------------------
def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="the main job: score a data set, fit calibrators, write a calibration report",
        description="Score a data set, fit each calibrator on a calibration split, evaluate all on the "
        "held-out rest (accuracy, NLL, Brier, ECE, smooth ECE, each with a bootstrap interval) and write "
        "a report folder: metrics.csv, metrics.md, probabilities.csv, reliability diagrams (PNG) and "
        "index.html. With no arguments: the embedded model on the bundled sentiment set.",
        epilog="examples:\n  calibkit eval\n  calibkit eval ../shared/data/sst2/dev.txt --limit 300 "
        "--calibrators contextual,temperature\n  calibkit eval agnews.csv --api-base $ACS_API_BASE --model llama-8b",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_args(p)
    _report_args(p)
    _backend_args(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .report import evaluate, slug
    from .scoring import score

    ds = _load(args)
    y = _labels(ds)
    backend = _backend(args)
    classes = list(ds.verbalizer.classes)
    texts = [str(v) for f in ds.fields for v in ds.frame[f]]
    cals = _calibrators(args.calibrators, classes, backend=backend, template=ds.template,
                        verbalizer=ds.verbalizer, texts=texts, method=args.method)
    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method)
    ev = evaluate(s, y, cals, classes=classes, calibration_fraction=args.calibration_fraction,
                  seed=args.seed, n_boot=args.bootstrap,
                  info={"data": ds.name, "model": backend.model_name, "method": args.method,
                        "template": ds.template.template, "median label mass": f"{float(np.median(s.label_mass)):.4g}"})
    print(f"{ds.name}: {len(s)} examples ({ev.info['n_calibration']} to calibrate, {ev.info['n_evaluation']} held out), "
          f"model {backend.model_name}")
    out = args.out or os.path.join("reports", slug(os.path.basename(str(ds.name))))
    _finish_report(ev, out, f"calibkit eval: {ds.name}")
    return 0


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
    p.add_argument("--label-column", default="label", help="the labels' column (default: label)")
    _report_args(p)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .report import evaluate, slug

    path = args.scores
    if path.endswith(".parquet"):
        _need_pyarrow()
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, keep_default_na=False)
    cols = [c for c in frame.columns if c.startswith("logprob[") and c.endswith("]")]
    if len(cols) < 2:
        raise ValueError(f"{path} has no logprob[<class>] columns; write it with calibkit score --out")
    if args.label_column not in frame.columns:
        raise ValueError(f"{path} has no column {args.label_column!r}; name the labels' column with --label-column")
    classes = [c[len("logprob["):-1] for c in cols]
    is_cf = frame["row"].eq("content-free") if "row" in frame.columns else pd.Series(False, index=frame.index)
    examples = frame[~is_cf]
    content_free = frame.loc[is_cf, cols].astype(float).to_numpy() if is_cf.any() else None
    y = [str(v) for v in examples[args.label_column]]
    cals = _calibrators(args.calibrators, classes, content_free=content_free)
    ev = evaluate(examples[cols].astype(float).to_numpy(), y, cals, classes=classes,
                  calibration_fraction=args.calibration_fraction, seed=args.seed, n_boot=args.bootstrap,
                  info={"scores": path})
    stem = os.path.splitext(os.path.basename(path))[0]
    _finish_report(ev, args.out or os.path.join("reports", slug(stem)), f"calibkit calibrate: {stem}")
    return 0


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("Parquet files need pyarrow: pip install 'calibkit[parquet]', or use a .csv file") from None


# -- serve and keys --------------------------------------------------------------------
def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the ACS completions API over local GGUF models",
        description="Serve POST /v1/completions (and /completions), GET /v1/models, /health and "
        "/openapi.json over the embedded model or GGUF files, following the ACS API's rules. "
        "Without --keys-file it serves loopback only, without authentication.",
        epilog="examples:\n  calibkit serve --model llama-8b --keys-file keys.json\n"
        "  calibkit serve --model tiny=models/tiny.gguf --port 8080 --no-auth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", default=[], metavar="SPEC",
                   help="NAME=PATH.gguf serves that file as NAME; NAME alone serves the embedded model as NAME; "
                        "repeat for several (default: the embedded model under its own name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--keys-file", metavar="PATH", help="accept exactly the API keys in this file (calibkit keys create)")
    p.add_argument("--no-auth", action="store_true", help="accept any request, on any host: only where you mean it")
    p.add_argument("--n-ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    from .server.config import ServerConfig

    defaults = ServerConfig()
    g = p.add_argument_group("limits")
    for f in ("max_body_bytes", "max_prompts", "max_tokens_limit", "max_n", "queue_size", "batch_size"):
        g.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(defaults, f),
                       help=f"(default {getattr(defaults, f)}); see ServerConfig")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server.config import ServerConfig
    from .server.run import serve

    config = ServerConfig(
        max_body_bytes=args.max_body_bytes, max_prompts=args.max_prompts, max_tokens_limit=args.max_tokens_limit,
        max_n=args.max_n, queue_size=args.queue_size, batch_size=args.batch_size,
    )
    serve(args.model, host=args.host, port=args.port, keys_file=args.keys_file, no_auth=args.no_auth,
          config=config, n_ctx=args.n_ctx, n_threads=args.threads, log_level=args.log_level)
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
        e = revoke_key(args.keys_file, args.id)
        print(f"revoked {e['id']} ({e.get('name', '')})")
    return 0


_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _peek_parser,
    _score_parser,
    _eval_parser,
    _calibrate_parser,
    _serve_parser,
    _keys_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibkit",
        description="Classify text with base language models by next-token probabilities, and calibrate them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .api import APIError, InvalidRequestError

    try:
        return int(args.func(args) or 0)
    except (APIError, InvalidRequestError, ValueError, KeyError, TypeError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"calibkit {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``calibkit`` command.

    calibkit peek "The capital of France is" -k 5     # what the model almost said
    calibkit score sentiment                          # score a data set, print a summary

Each subcommand lives in one ``_cmd_*`` function with its parser beside it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Sequence

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


# -- score -----------------------------------------------------------------------------
def _score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a data set: class log-probabilities per example",
        description="Score every example of a data set with a prompt template and a verbalizer, "
        "print accuracy, the probability mass on the label set and a few rows, and optionally "
        "write the scores (CSV or Parquet).",
        epilog="example: calibkit score sentiment --head 5 --out scores.csv",
    )
    p.add_argument("dataset", nargs="?", default="sentiment", help="a bundled data set name (default: sentiment)")
    p.add_argument("--method", choices=("auto", "topk", "exact"), default="auto", help="scoring method (default auto)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    p.add_argument("--head", type=int, default=5, help="rows to print (default 5)")
    p.add_argument("--out", metavar="FILE", help="write the scores here (.csv or .parquet)")
    _backend_args(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from .datasets import load_dataset
    from .scoring import score

    ds = load_dataset(args.dataset)
    frame = ds.frame if args.limit is None else ds.frame.head(args.limit)
    backend = _backend(args)
    s = score(frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method)
    table = s.to_frame()
    y = frame[ds.label_column].to_numpy()
    acc = float(np.mean(np.asarray(s.predict(), dtype=object) == y))
    print(f"{ds.name}: {len(s)} examples, model {backend.model_name}, method {args.method}")
    print(f"accuracy       {acc:.3f}")
    print(f"label mass     median {np.median(s.label_mass):.4g}  (min {s.label_mass.min():.3g}, max {s.label_mass.max():.3g})")
    print(f"censored       {int(s.censored.sum())} of {s.censored.size} entries")
    print(f"requests       {s.provenance['requests']} sent, {s.provenance['cache_hits']} from the cache")
    shown = pd.concat([frame.reset_index(drop=True)[ds.fields + [ds.label_column]], table], axis=1).head(args.head)
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        print(shown.to_string(index=False))
    if args.out:
        out = pd.concat([frame.reset_index(drop=True), table], axis=1)
        if args.out.endswith(".parquet"):
            out.to_parquet(args.out, index=False)
        else:
            out.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


# -- serve -----------------------------------------------------------------------------
def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the ACS completions API over a local model",
        description="Serve POST /v1/completions, GET /v1/models, GET /health and GET /openapi.json "
        "over the embedded model or any GGUF, with the ACS API's request rules, so that code written "
        "for the API runs against it. Without --keys-file it serves loopback only, with no "
        "authentication (and a warning); other hosts need --keys-file, or --no-auth.",
        epilog="example: calibkit serve --model llama-8b --keys-file keys.json --port 8000\n"
        "then: export ACS_API_BASE=http://127.0.0.1:8000/v1 ACS_API_KEY=<a key from calibkit keys create>",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME[=PATH]",
        help="serve PATH (a GGUF file) as NAME; NAME alone serves the embedded model under that name; "
        "repeatable (default: the embedded model as google/gemma-3-270m)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--keys-file", metavar="PATH", help="accept exactly the keys in this file (re-read when it changes)")
    p.add_argument("--no-auth", action="store_true", help="serve a non-loopback host without authentication")
    g = p.add_argument_group("limits")
    g.add_argument("--n-ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    g.add_argument("--n-threads", type=int, default=None, help="CPU threads (default: all cores)")
    g.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens accepted (default 512)")
    g.add_argument("--max-prompts", type=int, default=64, help="prompts per request (default 64)")
    g.add_argument("--max-n", type=int, default=16, help="largest n and best_of (default 16)")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    g.add_argument("--queue-size", type=int, default=64, help="queued requests before 503 (default 64)")
    g.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    config = ServerConfig(
        max_body_bytes=args.max_body_bytes, max_prompts=args.max_prompts, max_tokens_limit=args.max_tokens_limit,
        max_n=args.max_n, queue_size=args.queue_size,
    )
    try:
        serve(args.model, host=args.host, port=args.port, keys_file=args.keys_file, no_auth=args.no_auth,
              config=config, n_ctx=args.n_ctx, n_threads=args.n_threads, log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    return 0


# -- keys ------------------------------------------------------------------------------
def _keys_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="create, list and revoke API keys of calibkit serve",
        description="Manage the keys file of calibkit serve. It stores salted hashes only: a new key "
        "is printed once, alone on the last line of `create`. A running server re-reads the file, "
        "so a revoked key stops working at once.",
        epilog="example: calibkit keys create --keys-file keys.json --name laptop",
    )
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ks.add_parser("create", help="make a new key and print it (once)")
    c.add_argument("--name", default="", help="a label to recognise the key by in `list`")
    ks.add_parser("list", help="show ids, names and creation times (never the keys)")
    r = ks.add_parser("revoke", help="remove a key by its id")
    r.add_argument("id", help="the key's id, as `calibkit keys list` shows it")
    for q in (c, ks.choices["list"], r):
        q.add_argument("--keys-file", metavar="PATH", required=True, help="the keys file")
    p.set_defaults(func=_cmd_keys)


def _cmd_keys(args: argparse.Namespace) -> int:
    from .server.keys import create_key, list_keys, revoke_key

    try:
        if args.keys_command == "create":
            key, entry = create_key(args.keys_file, name=args.name)
            label = f" ({entry['name']})" if entry["name"] else ""
            print(f"created key {entry['id']}{label} in {args.keys_file}")
            print("store it now: it is shown only this once, and the file keeps only its salted hash")
            print(key)
        elif args.keys_command == "list":
            entries = list_keys(args.keys_file)
            if not entries:
                print(f"no keys in {args.keys_file}")
            else:
                print(f"{'id':<10} {'created':<26} name")
                for e in entries:
                    print(f"{e['id']:<10} {e['created'] or '':<26} {e['name'] or ''}")
        else:
            entry = revoke_key(args.keys_file, args.id)
            print(f"revoked key {entry['id']}" + (f" ({entry['name']})" if entry["name"] else ""))
    except KeyError as e:  # an unknown id: say so without KeyError's quotes
        raise ValueError(e.args[0]) from None
    return 0


_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_peek_parser, _score_parser, _serve_parser, _keys_parser]


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
    except (APIError, InvalidRequestError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"calibkit {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

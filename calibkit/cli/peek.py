"""``calibkit peek``: the top-k next tokens after a prompt, what the model almost said."""

from __future__ import annotations

import argparse
import math

from .flags import backend_args, backend_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peek",
        help="show the top-k next tokens after a prompt",
        description="The k most likely next tokens after PROMPT, with logprob and probability: "
        "what the model almost said.",
        epilog='example: calibkit peek "The capital of France is" -k 5',
    )
    p.add_argument("prompt", help="the prompt text (use $'...' in bash for newlines)")
    p.add_argument("-k", type=int, default=20, help="how many tokens (default 20; an API may cap it, ACS at 20)")
    backend_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends.factory import check_k, open_backend

    check_k(None, args.k)
    backend = open_backend(args.model, cache=False if args.no_cache else None, **backend_options(args))
    check_k(backend, args.k)
    top = backend.top_k([args.prompt], args.k)[0]
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[: args.k]
    print(f"{backend.model_name}: top-{len(ranked)} next tokens after {args.prompt!r}")
    print(f"{'rank':>4}  {'token':<24} {'logprob':>9} {'prob':>8}")
    for i, (tok, lp) in enumerate(ranked, 1):
        print(f"{i:>4}  {tok!r:<24} {lp:>9.4f} {math.exp(lp):>8.4f}")
    print(f"mass in the top {len(ranked)}: {sum(math.exp(v) for _, v in ranked):.4f}")
    return 0

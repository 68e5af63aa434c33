"""``calibkit serve``: the ACS completions API over local models (llama.cpp or transformers)."""

from __future__ import annotations

import argparse
import dataclasses


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    from ..server.run import BACKENDS

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
    from ..server.config import ServerConfig

    g = p.add_argument_group("limits")
    for f in dataclasses.fields(ServerConfig):
        if f.name in LIMITS:
            g.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default, metavar="N",
                           help=f"{f.metadata['help']} (default {f.default})")
    p.set_defaults(func=run)


LIMITS = ("max_body_bytes", "max_prompts", "max_tokens_limit", "max_n", "max_request_tokens", "queue_size",
                 "batch_size", "body_timeout")


def run(args: argparse.Namespace) -> int:
    from ..server.config import ServerConfig
    from ..server.run import serve

    config = ServerConfig(**{name: getattr(args, name) for name in LIMITS})
    serve(args.model, host=args.host, port=args.port, keys_file=args.keys_file, no_auth=args.no_auth,
          config=config, n_ctx=args.n_ctx, n_threads=args.threads, log_level=args.log_level,
          backend=args.backend, device=args.device)
    return 0

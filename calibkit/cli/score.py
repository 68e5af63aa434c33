"""``calibkit score``: a data set's class log-probabilities, a summary, and a scores file."""

from __future__ import annotations

import argparse

import numpy as np

from .flags import backend_args, backend_options, data_args, seed_arg, selection_options, unescape, verbalizer_of


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    data_args(p)
    seed_arg(p)
    p.add_argument("--head", type=int, default=5, help="rows to print (default 5)")
    p.add_argument("--out", metavar="FILE", help="write the scores here (.csv or .parquet)")
    backend_args(p, ray=True)
    p.set_defaults(func=run)


def load(args: argparse.Namespace):  # -> Dataset
    """The data set the data flags name (one --template, one --verbalizer)."""
    from ..datasets.selection import select

    template = unescape(args.template) if args.template else None
    return select(args.dataset, template=template, verbalizer=verbalizer_of(args.verbalizer),
                  **selection_options(args))


def open_model(args: argparse.Namespace):  # -> Backend
    from ..backends.factory import check_k, open_backend

    check_k(None, args.k)  # before the model loads
    backend = open_backend(args.model, cache=False if args.no_cache else None, **backend_options(args))
    check_k(backend, args.k)
    return backend


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..backends.factory import check_options
    from ..datasets.selection import checked_labels
    from ..label_scores import check_scores_path, write_scores
    from ..progress import say
    from ..scoring import CONTENT_FREE, content_free_scores, score

    if args.out:
        try:
            check_scores_path(args.out)
        except ValueError as e:
            raise ValueError(f"--out {e}") from None
    check_options(**backend_options(args))
    ds = load(args)
    y = checked_labels(ds)
    backend = open_model(args)
    say(f"scoring {len(ds.frame)} examples with {backend.model_name} (method={args.method}) ...")
    s = score(ds.frame[ds.fields], ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
    table = s.to_frame()
    acc = float(np.mean([p == t for p, t in zip(s.predict(), y)]))
    print(f"{ds.name}: {len(s)} examples ({ds.selected}), model {backend.model_name}, method {args.method}")
    print(f"accuracy       {acc:.3f}")
    print(f"label mass     median {np.median(s.label_mass):.4g}  (min {s.label_mass.min():.3g}, max {s.label_mass.max():.3g})")
    print(f"censored       {int(s.censored.sum())} of {s.censored.size} entries")
    print(f"questions      {s.provenance['requests']} asked of the model, {s.provenance['cache_hits']} from the cache")
    frame = ds.frame.reset_index(drop=True)
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        print(pd.concat([frame[ds.fields + [ds.label_column]], table], axis=1).head(args.head).to_string(index=False))
    if args.out:
        cf = content_free_scores(ds.template, ds.verbalizer, backend, method=args.method, k=args.k)
        cf_frame = pd.DataFrame({f: list(CONTENT_FREE) for f in ds.fields})
        write_scores(args.out, s, frame, label_column=ds.label_column, content_free=cf, content_free_frame=cf_frame)
        print(f"wrote {args.out}")
    return 0

"""``calibkit forms``: rank candidate label words per class by cross-validated worth."""

from __future__ import annotations

import argparse

from ..progress import say
from .flags import backend_args, data_args, json_object, seed_arg
from .score import load, open_model


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    data_args(p)
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
    seed_arg(p)
    backend_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from ..datasets.selection import checked_labels
    from ..form_search import search_forms, sees_vocabulary
    from ..names import check_calibration

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
        candidates = json_object("--candidates", args.candidates, '{"neg": [" bad"], "pos": [" good"]}')
    ds = load(args)
    y = ds.frame[ds.label_column].tolist()
    if candidates is None:
        candidates = ds.verbalizer
        y = checked_labels(ds)
    elif set(map(str, candidates)) == set(map(str, ds.verbalizer.classes)):
        # JSON keys are strings: the data set's classes as they are (an int label stays an int)
        by_name = {str(c): c for c in ds.verbalizer.classes}
        candidates = {by_name[k]: v for k, v in candidates.items()}
    backend = open_model(args)
    proposing = sees_vocabulary(backend) and args.proposed > 0
    say(f"searching label words on {len(ds.frame)} examples with {backend.model_name}"
         + (f" ({args.proposed} proposed per class from the whole vocabulary)" if proposing else "") + " ...")
    try:
        found = search_forms(ds.frame[ds.fields], y, ds.template, backend, candidates=candidates,
                             n_proposed=args.proposed, calibration=args.calibration, cv=args.cv,
                             select_by=args.select_by, random_state=args.seed)
    except ValueError as e:
        message = str(e).replace("give candidates", "give --candidates")
        raise ValueError(message.replace("candidates=", "--candidates ")) from None
    print(f"{ds.name}: {len(ds.frame)} examples ({ds.selected}), model {backend.model_name}, "
          f"--calibration {args.calibration}, {args.cv}-fold cross-validated")
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(found.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    mapping = {str(c): f for c, f in zip(found.verbalizer.classes, (fs[0] for fs in found.verbalizer.forms))}
    print(f"\nfound: --verbalizer '{json.dumps(mapping, ensure_ascii=False)}'")
    if args.out:
        found.table.to_csv(args.out, index=False, float_format="%.6g")
        print(f"wrote {args.out}")
    return 0

"""``calibkit calibrate``: a scores file (from ``calibkit score --out``) to calibrated
probabilities and a report, with no model."""

from __future__ import annotations

import argparse
import os

from ..progress import say
from .flags import names_list, report_args, seed_arg
from .output import report_folder, show_report, warnings_said


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    report_args(p)
    seed_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..estimator import make_calibrator
    from ..evaluation import evaluate
    from ..label_scores import read_scores
    from ..names import check_calibrators

    chosen = check_calibrators(args.calibrators)
    path = args.scores
    folder, fresh = report_folder(args.out, args.overwrite, path)
    f = read_scores(path, label_column=args.label_column)
    if f.labels is None:
        raise ValueError(f"{path} has no 'label' column (its columns are {[str(c) for c in f.frame.columns]}); "
                         "name the labels' column with --label-column")
    parts = {part.strip() for n in chosen for part in n.split("+")}
    if "domain" in parts:
        raise ValueError("--calibrators domain draws in-domain words and scores them with the model; "
                         "use calibkit eval, which has the model")
    if "contextual" in parts and f.content_free is None:
        raise ValueError(f"--calibrators contextual needs the scores of content-free inputs, and {path} has no "
                         "row=content-free rows; write the file with calibkit score --out")
    classes = list(f.scores.classes)
    content_free = f.content_free.logprobs if f.content_free is not None else None
    cals = {n: make_calibrator(n, classes, content_free=content_free) for n in chosen}
    say(f"fitting {len(cals)} calibrator(s) and bootstrapping {args.metrics.replace(',', ', ')} "
        f"(bootstrap={args.bootstrap}, metrics= to choose) ...")
    with warnings_said("calibrate"):
        ev = evaluate(f.scores, f.labels, cals, classes=classes, calibration_fraction=args.calibration_fraction,
                      seed=args.seed, n_boot=args.bootstrap, metrics=names_list(args.metrics), info={"scores": path})
        stem = os.path.splitext(os.path.basename(path))[0]
        show_report(ev, folder, fresh, f"calibkit calibrate: {stem}", overwrite=args.overwrite)
    return 0

"""``calibkit eval``: the main job. The flags (or a TOML file) make a :class:`calibkit.Study`;
it runs, and its report is written. One configuration or many, one flow."""

from __future__ import annotations

import argparse
from typing import Any

from .config import KEYS, read_study_file
from .flags import backend_args, backend_options, data_args, names_list, report_args, seed_arg, unescape, verbalizer_of
from .output import report_folder, show_report, warnings_said

# The flags a study file may set too, and their defaults: the parser leaves a flag not
# given as None, so that the command line wins over the file and the file over these.
_DEFAULTS: dict[str, Any] = {}


def add_parser(sub: argparse._SubParsersAction) -> None:
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
        f"the file's keys: {', '.join(KEYS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_args(p, several=True)
    report_args(p)
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
    seed_arg(p)
    backend_args(p, ray=True, several=True)
    for key in KEYS:
        dest = _DEST.get(key, key)
        _DEFAULTS[dest] = p.get_default(dest)
    p.set_defaults(func=run, **{_DEST.get(key, key): None for key in KEYS})


# A study file's keys whose flag has another destination.
_DEST = {"templates": "template", "verbalizers": "verbalizer", "models": "model"}


def study_options(args: argparse.Namespace) -> dict[str, Any]:
    """The study the flags describe, over --config's file, over the defaults: the file's
    keys (dataset, templates, ...) with their values."""
    given = {key: getattr(args, _DEST.get(key, key)) for key in KEYS}
    from_file = read_study_file(args.config) if args.config else {}
    options = {}
    for key in KEYS:
        if given[key] is not None:
            value = given[key]
            if key == "templates":
                value = [unescape(t) for t in value]
            elif key == "verbalizers":
                value = [verbalizer_of(v, f"v{i}") for i, v in enumerate(value, 1)]
            elif key in ("calibrators", "metrics"):
                value = names_list(value)
        elif key in from_file:
            value = from_file[key]
        else:
            value = _DEFAULTS[_DEST.get(key, key)]
            if key in ("calibrators", "metrics"):
                value = names_list(value)
        options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from ..study import Study

    options = study_options(args)
    name, out = options.pop("dataset"), options.pop("out")
    extra = {k: v for k, v in backend_options(args).items() if k not in options}
    study = Study(name, **options, **extra, cache=False if args.no_cache else None)
    folder, fresh = report_folder(out, args.overwrite, name)
    with warnings_said("eval"):
        results = study.run()
    info = results.info
    if results.single:
        print(f"{info['data']}: {info['n']} examples ({info['n_calibration']} to "
              f"calibrate, {info['n_evaluation']} held out), model {next(iter(info['models'].values()))['model']}")
    else:
        n_rows = len(results.table) // len(info["configurations"])
        print(f"{info['data']}: {info['n']} examples ({info['n_calibration']} to calibrate, {info['n_evaluation']} "
              f"held out), {len(info['configurations'])} configuration(s) × {n_rows} calibrators (uncalibrated too); "
              f"baseline {results.baseline}")
    with warnings_said("eval"):
        show_report(results, folder, fresh, f"calibkit eval: {info['data']}", overwrite=args.overwrite)
    return 0

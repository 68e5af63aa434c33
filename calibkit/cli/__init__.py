"""The ``calibkit`` command: score, calibrate and report from the shell, and serve the model.

    calibkit peek "The capital of France is" -k 5     # what the model almost said
    calibkit score sentiment --out scores.csv         # score a data set, print a summary
    calibkit eval                                     # the main job: a calibration study's report
    calibkit calibrate scores.csv                     # scores file -> calibrated probabilities, report

One module per command (its parser and what it runs), over the library: ``calibkit eval``
is :class:`calibkit.Study`, built from the flags or a TOML file. The flags shared by the
commands, and the translation of library messages into flags, are in :mod:`.flags`.

Errors: a user error (bad input, a missing file, an answer the API refused: see
:data:`USER_ERRORS`) is printed as one line, ``calibkit <command>: <message>``, with
exit status 1, in the words of the command line (``--text-column``, never
``text_column=``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..api import APIError
from . import calibrate, eval, forms, keys, peek, score, serve
from .flags import flag_words, unescape

__all__ = ["USER_ERRORS", "build_parser", "flag_words", "main", "unescape"]

# What a user can cause and fix: bad input of any kind (ValueError and its subclasses:
# InvalidRequestError, DatasetFormatError, TokenizationError, KeyFileError), an error
# answer from an API, a missing or unreadable file. TypeError, KeyError, AttributeError
# and the rest are bugs: they propagate with their traceback. (HFUnavailableError,
# CacheError and an ImportError that says what to pip install are user errors too.)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, APIError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
    ConnectionError,  # a --ray address with no cluster there
)

_COMMANDS = (peek, score, eval, forms, calibrate, serve, keys)


def _version() -> str:
    from ..version import __version__

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
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def _user_error(e: BaseException) -> bool:
    """Whether an exception is the user's to fix (one line) rather than a bug (a traceback)."""
    if isinstance(e, USER_ERRORS):
        return True
    from ..cache import CacheError
    from ..datasets import HFUnavailableError

    if isinstance(e, (HFUnavailableError, CacheError)):  # CacheError: a full disk, a damaged cache file
        return True
    # The library's own "install this extra" errors, not an import that a bug broke.
    return isinstance(e, ImportError) and "pip install" in str(e)


class _Steps(logging.Handler):
    """The library's steps (:data:`calibkit.progress.STEPS`) on stderr, in flags."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"calibkit: {flag_words(record.getMessage())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``calibkit`` command; returns the exit status (0, 1 for a user error, 2 for usage).

    >>> main(["calibrate", "no-such-file.csv"])  # says on stderr: no scores file at 'no-such-file.csv'; ...
    1
    """
    from ..progress import STEPS

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    handler, level = _Steps(), STEPS.level
    STEPS.addHandler(handler)
    STEPS.setLevel(logging.INFO)
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
    finally:
        STEPS.removeHandler(handler)
        STEPS.setLevel(level)

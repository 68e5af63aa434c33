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
``text_column=``). Anything else is a bug and keeps its traceback. A misspelled flag or
command is the command's usage error, with the closest name suggested ("did you mean
--template?"). Ctrl-C is one line too, exit status 130: how many answers the response
cache keeps, and the command to run again, which reads them instead of asking again.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import shlex
import sys
from typing import Any, Sequence

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


class _Parser(argparse.ArgumentParser):
    """argparse, with the closest name suggested for a misspelled flag or command.

    A command's parser reports its own unknown flags (argparse hands them up to the
    top-level parser, whose usage names no flag of the command). Python 3.14's
    ``suggest_on_error`` suggests choices only, and calibkit supports 3.10.
    """

    _commands: Any = None

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        if self._commands is not None:
            self._check_command(args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return namespace, extras

    def _check_command(self, args: list[str]) -> None:
        word, words = None, iter(args)
        for arg in words:  # the first word that is not a flag or a flag's value
            if not arg.startswith("-"):
                word = arg
                break
            action = self._option_string_actions.get(arg)
            if action is not None and action.nargs != 0:
                next(words, None)
        names = list(self._commands.choices)
        if word is None or word in names:
            return
        close = difflib.get_close_matches(word, names, n=1)
        if close:
            self.error(f"argument {self._commands.metavar or self._commands.dest}: invalid choice: {word!r}; "
                       f"did you mean {close[0]}? "
                       f"(choose from {', '.join(names)})")

    def _unrecognized(self, extras: list[str]) -> str:
        # argparse keeps no public list of a parser's flags.
        flags = [f for f in self._option_string_actions if f.startswith("--")]
        hints = []
        for word in extras:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1)
                if close:
                    hints.append((word.split("=", 1)[0], close[0]))
        message = f"unrecognized arguments: {' '.join(extras)}"
        if len(hints) == 1:
            return f"{message}; did you mean {hints[0][1]}?"
        if hints:
            return f"{message}; did you mean {', '.join(f'{m} (for {w})' for w, m in hints)}?"
        return message


def build_parser() -> argparse.ArgumentParser:
    """The ``calibkit`` argument parser, every subcommand in it.

    >>> build_parser().parse_args(["score", "data.jsonl", "--format", "cb", "-k", "5"]).format
    'cb'
    """
    parser = _Parser(
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


def _interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """What Ctrl-C leaves: the answers the response cache keeps, and the command that resumes."""
    again = shlex.join(["calibkit", *argv])
    if not hasattr(args, "no_cache"):  # a command that asks no model
        return f"interrupted; to start again: {again}"
    if args.no_cache:
        return f"interrupted; --no-cache kept no answers; to start again: {again}"
    from ..cache import ResponseCache, default_cache_path

    path = default_cache_path()
    try:
        kept = len(ResponseCache(path)) if path.exists() else 0
    except Exception:  # a second problem must not hide the first line
        return f"interrupted; to resume: {again} (the answers in the response cache {path} are not asked again)"
    return (f"interrupted; the response cache {path} keeps {kept} answer{'s' * (kept != 1)}; to resume: {again} "
            "(what was answered is read from the cache, not asked again)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``calibkit`` command; returns the exit status (0, 1 for a user error, 2 for usage,
    130 for Ctrl-C).

    >>> main(["calibrate", "no-such-file.csv"])  # says on stderr: no scores file at 'no-such-file.csv'; ...
    1
    """
    from ..progress import STEPS

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    handler, level = _Steps(), STEPS.level
    STEPS.addHandler(handler)
    STEPS.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"calibkit {args.command}: {_interrupted(args, argv)}", file=sys.stderr)
        return 130
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

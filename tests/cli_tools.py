"""What the command-line tests share: running calibkit as a user runs it, fake models, the test data's
constants."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np

from calibkit import cli
from calibkit.label_scores import LabelScores

from helpers import SHARED_DATA


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibkit.cli", *args], capture_output=True, text=True, timeout=300)


SST2_DEV = SHARED_DATA / "sst2" / "dev.txt"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run calibkit in-process; assert a one-line user error with exit 1; return the line."""
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("calibkit: ")]  # status lines
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"calibkit {argv[0]}: ")
    return lines[0]


def open_with(monkeypatch, opener) -> None:
    """Every command's model opened by ``opener`` (called as open_backend is)."""
    import calibkit.backends.factory
    import calibkit.study

    monkeypatch.setattr(calibkit.backends.factory, "open_backend", opener)
    monkeypatch.setattr(calibkit.study, "open_backend", opener)


class FakeBackend:
    model_name = "fake"
    logprobs_cap = 20
    identity = {"backend": "fake"}


def fake_score(calls):
    def score(examples, template, verbalizer, backend, method="auto", *, k=None, check=True, **kw):
        calls.append({"k": k, "method": method, "n": len(examples)})
        n, K = len(examples), len(verbalizer.classes)
        lp = np.log(np.full((n, K), 0.5 / K))
        lp[np.arange(n), np.arange(n) % K] = np.log(0.4)
        return LabelScores.from_logprobs(lp, list(verbalizer.classes),
                                         provenance={"requests": n, "cache_hits": 0, "method": method})
    return score


def limited_rows(capsys, data, *flags: str) -> tuple[list[str], str]:
    """The review texts `score --limit 4` printed, and its stderr."""
    assert cli.main(["score", str(data), "--text-column", "review", "--label-column", "stars", "--limit", "4",
                     "--head", "4", *flags]) == 0
    out = capsys.readouterr()
    return [t for t in re.findall(r"^\s*(.+?\.)\s", out.out, flags=re.M)], out.err


# -- a study: several templates, verbalizers and models compared in one report -----------
TEMPLATE_A = "Review: {text}\\nSentiment:"


TEMPLATE_B = "{text}\\nThe review is"


def template_score(calls):
    """A fake score whose numbers depend on the template and verbalizer (seeded by their text)."""
    def score(examples, template, verbalizer, backend, method="auto", *, k=None, check=True, **kw):
        calls.append(template.template)
        n, K = len(examples), len(verbalizer.classes)
        seed = sum(map(ord, template.template + repr(verbalizer.mapping) + backend.model_name))
        lp = np.random.default_rng(seed).normal(size=(n, K))
        return LabelScores.from_logprobs(lp, list(verbalizer.classes),
                                         provenance={"requests": n, "cache_hits": 0, "method": method})
    return score


class NamedBackend(FakeBackend):
    def __init__(self, name: str | None) -> None:
        self.model_name = name or "org/fake-model"


STUDY_TOML = '''
dataset = "sentiment"
limit = 80
stratify = true
calibrators = ["temperature", "batch"]
metrics = ["accuracy", "nll"]
bootstrap = 30
baseline = "long/words/a"
alpha = 0.2
out = "from-the-file"

[templates]
short = "Review: {text}\\nSentiment:"
long = "{text}\\nThe review is"

[verbalizers.words]
negative = " negative"
positive = " positive"

[verbalizers.other]
negative = " bad"
positive = " good"
'''

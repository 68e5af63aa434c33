"""calibkit.cli.peek: the top-k next tokens."""

from __future__ import annotations


from cli_tools import run


def test_peek_lists_paris() -> None:
    r = run("peek", "The capital of France is", "-k", "5", "--no-cache")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("google/gemma-3-270m: top-5 next tokens")
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 5 and any("' Paris'" in row for row in rows)

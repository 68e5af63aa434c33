"""calibkit.cli (main): errors are one line in flags, bugs keep their traceback, the version."""

from __future__ import annotations


import pytest

from calibkit import cli

from cli_tools import one_line_error, run


def test_errors_are_one_line_and_name_the_fix() -> None:
    r = run("score", "no-such-set")
    assert r.returncode == 1 and "bundled ones are" in r.stderr and "Traceback" not in r.stderr
    assert run().returncode == 2


def test_an_unknown_data_set_is_one_line(capsys) -> None:
    line = one_line_error(capsys, ["score", "no-such-set"])
    assert "bundled ones are" in line and "'sentiment'" in line


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    for exc in (TypeError("a bug"), KeyError("a bug"), AttributeError("a bug")):
        def broken(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli.score, "run", broken)
        with pytest.raises(type(exc)):
            cli.main(["score"])


def test_an_import_error_is_a_bug_unless_it_says_what_to_install(monkeypatch, capsys) -> None:
    def missing_extra(args):
        raise ImportError("the embedded model needs llama-cpp-python: pip install 'calibkit[local]'")

    monkeypatch.setattr(cli.score, "run", missing_extra)
    assert "pip install 'calibkit[local]'" in one_line_error(capsys, ["score"])

    def broken(args):
        raise ImportError("cannot import name 'X' from 'calibkit.scoring'")

    monkeypatch.setattr(cli.score, "run", broken)
    with pytest.raises(ImportError):
        cli.main(["score"])


def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"calibkit {version('calibkit')}"


def test_a_refused_top_k_names_k(monkeypatch, capsys) -> None:
    from calibkit.api import InvalidRequestError

    def refused(*args, **kwargs):
        raise InvalidRequestError("logprobs must be an integer between 0 and 20 (got 50)", param="logprobs")

    import calibkit.backends.factory

    monkeypatch.setattr(calibkit.backends.factory, "open_backend", refused)
    assert one_line_error(capsys, ["peek", "x", "-k", "50"]).startswith("calibkit peek: -k 50: logprobs must be")


def test_hf_without_the_extra_is_one_line_naming_the_install(capsys) -> None:
    try:
        import datasets

        if getattr(datasets, "load_dataset", None):
            pytest.skip("the Hugging Face datasets library is installed here")
    except ImportError:
        pass
    line = one_line_error(capsys, ["eval", "hf:sst2", "--limit", "5"])
    assert "pip install 'calibkit[hf]'" in line and "=" not in line.split("not installed")[1]


@pytest.mark.parametrize("argv, usage, hint", [
    (["eval", "--tempalte", "x"], "usage: calibkit eval ", "calibkit eval: error: unrecognized arguments: --tempalte"),
    (["score", "sentiment", "--limt=3"], "usage: calibkit score ", "did you mean --limit?"),
    (["eval", "--tempalte", "x", "--limt", "3"], "usage: calibkit eval ",
     "did you mean --template (for --tempalte), --limit (for --limt)?"),
    (["evl"], "usage: calibkit ", "invalid choice: 'evl'; did you mean eval?"),
])
def test_a_misspelled_flag_or_command_gets_the_closest_name(capsys, argv, usage, hint) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage) and hint in err, err
    if argv[0] == "eval" and len(argv) == 3:
        assert err.rstrip().endswith("did you mean --template?"), err


def test_ctrl_c_says_what_the_cache_keeps_and_the_command_that_resumes(local_model, tmp_path) -> None:
    import os
    import shlex
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from calibkit.cache import LAYOUT, ResponseCache, default_cache_path

    path = default_cache_path()  # this test's own folder (conftest), where the run keeps its answers
    argv = ["eval", "sentiment", "--out", str(tmp_path / "report")]

    def answers() -> int:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                return db.execute(f"SELECT COUNT(*) FROM answers_v{LAYOUT}").fetchone()[0]
        except sqlite3.Error:  # not made yet
            return 0

    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "calibkit.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and not (path.exists() and answers()):
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it was interrupted: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("calibkit: ")]
    assert proc.returncode == 130 and "Traceback" not in err and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("calibkit eval: interrupted; ")
    kept = len(ResponseCache(path))
    assert 0 < kept and f"the response cache {path} keeps {kept} answer" in line, (kept, line)
    assert f"to resume: {shlex.join(['calibkit', *argv])} (" in line

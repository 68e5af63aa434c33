"""The README runs as written.

- Every ```python block is a doctest: the blocks run in order, in one namespace, from the
  first line to the last, and each shows the output it prints (numbers within two units of
  their last shown decimal, for llama.cpp's CPU-dependent last bits; ``...`` where a block
  says so). A block line that is neither code nor the output of code fails the test, so
  nothing shown goes unrun.
- Every ```bash block runs line by line in a scratch folder, with the arguments the README
  shows: ``calibkit`` commands through :func:`calibkit.cli.main` in-process, ``calibkit
  serve`` as a subprocess on a free port (stopped at the end of its block), ``export`` as
  environment variables that the next checks use. The ``make`` targets are not run (see
  :data:`NOT_RUN`).

Extra prose, and options the README does not show, change nothing here: only the code
blocks are read. All the README's model answers share one cache for this module, so a data
set scored by one block is not scored again by the next.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The bash lines that are shown but not run, and why.
NOT_RUN = {
    "make demo": "creates .venv and installs the project into it: these tests run inside that install, "
                 "and `calibkit eval` (what it runs then) is run from the command-line block",
    "make test": "runs the whole test suite, this file included",
    "make bench": "runs every benchmark for minutes and needs the reference packages (torch, netcal)",
}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # the README line of the block's first code line
    section: str  # the heading above it

    @property
    def id(self) -> str:
        return f"{self.lang}-L{self.line}-{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}"


def fenced_blocks(text: str) -> list[Block]:
    """The README's fenced code blocks, in order, with their language and line."""
    blocks, section, lang, start, body = [], "", None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            m = re.match(r"^```(\w*)\s*$", line)
            if m:
                lang, start, body = m.group(1), n + 1, []
        elif line.startswith("```"):
            blocks.append(Block(lang, "\n".join(body) + "\n", start, section))
            lang = None
        else:
            body.append(line)
    assert lang is None, "README.md has an unclosed code fence"
    return blocks


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang == "python"]
BASH = [b for b in BLOCKS if b.lang == "bash"]


def bash_lines(block: Block) -> list[tuple[int, str]]:
    """(README line, command without its comment) for each command of a bash block."""
    out = []
    for i, line in enumerate(block.code.splitlines()):
        words = shlex.split(line, comments=True)
        if words:
            out.append((block.line + i, line.split(" #")[0].strip()))
    return out


def _python_blocks_as_doctests(namespace: dict) -> list[doctest.DocTest]:
    """One doctest per python block, all in ``namespace`` (DocTest copies the globals it is given)."""
    parser = doctest.DocTestParser()
    tests = [parser.get_doctest(b.code, {}, f"README.md:{b.line}", str(README), b.line - 1) for b in PYTHON]
    for t in tests:
        t.globs = namespace
    return tests


# -- what can be checked without the model ------------------------------------------------------
def test_readme_has_python_and_bash_blocks() -> None:
    assert len(PYTHON) >= 4 and BASH
    assert {b.lang for b in BLOCKS} <= {"python", "bash", ""}, "a code block in a language this test does not run"


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_block_is_all_doctest(block: Block) -> None:
    """Every line of a python block is code (after >>> or ...) or the output of the code
    above it: a line of plain code would be shown and never run."""
    parts = doctest.DocTestParser().parse(block.code)
    examples = [p for p in parts if isinstance(p, doctest.Example)]
    assert examples, f"README.md:{block.line}: a python block without >>> examples is never run"
    prose = [p for p in parts if isinstance(p, str) and p.strip()]
    assert not prose, f"README.md:{block.line}: lines that doctest does not run or compare: {prose}"
    assert any(e.want for e in examples), f"README.md:{block.line}: the block shows no output"


def test_bash_lines_are_commands_this_test_knows() -> None:
    for block in BASH:
        for line, cmd in bash_lines(block):
            word = shlex.split(cmd)[0]
            assert word in {"calibkit", "make", "export"}, f"README.md:{line}: {cmd!r} is neither run nor excused"
            if word == "make":
                assert cmd in NOT_RUN, f"README.md:{line}: {cmd!r} is not run: add why to NOT_RUN"


def test_the_commands_said_to_take_api_base_are_those_that_do() -> None:
    from calibkit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    takes = {name for name, p in sub.choices.items() if any("--api-base" in a.option_strings for a in p._actions)}
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", README.read_text(encoding="utf-8"))]
    said = [re.split(r"\. ", p.split("`--api-base")[0])[-1] for p in paragraphs
            if re.search(r"\btakes? `--api-base", p)]
    assert said, "the README no longer says which commands take --api-base"
    named = {w for sentence in said for w in re.findall(r"`(\w+)`", sentence)}
    assert named == takes, f"the README says {sorted(named)} take --api-base; the CLI gives it to {sorted(takes)}"


class NumbersWithin(doctest.OutputChecker):
    """doctest's checker, where a number with decimals may also be off by up to two units of
    its last shown decimal (llama.cpp's kernels differ by CPU in the last bits, and a value
    near a rounding edge prints either way). Numbers are paired in order, so this applies only
    where the shown output and the printed one hold as many numbers."""

    NUMBER = re.compile(r"-?\d+\.\d+")

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        shown, printed = list(self.NUMBER.finditer(want)), self.NUMBER.findall(got)
        if not shown or len(shown) != len(printed):
            return False
        pieces, end = [], 0
        for m, value in zip(shown, printed):
            decimals = len(m.group().split(".")[1])
            if abs(float(value) - float(m.group())) > 2 * 10**-decimals + 1e-12:
                return False
            pieces += [want[end : m.start()], value]
            end = m.end()
        return super().check_output("".join(pieces) + want[end:], got, optionflags)


# -- the scratch folder, the session's cache ----------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """A folder to run the README in, with ../shared beside it as beside the repository
    (where the shared data sets are), and the session's cache (conftest.py) as its cache: the
    GGUF assembled, and converted for transformers, once for every test, and the answers to
    questions other tests asked alike (the bundled sentiment set's scores, SST-2's) not asked again."""
    base = tmp_path_factory.mktemp("readme")
    (base / "work").mkdir()
    (base / "cache").symlink_to(session_cache, target_is_directory=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (base / "shared").symlink_to(shared, target_is_directory=True)
    return base


@pytest.fixture
def in_scratch(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(scratch / "cache"))  # after conftest's per-test cache
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the CLI's reports draw; restored afterwards
    for var in ("ACS_API_BASE", "ACS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(scratch / "work")
    return scratch / "work"


# -- the python blocks ---------------------------------------------------------------------------
@pytest.mark.model
def test_python_blocks_run_and_print_what_they_show(in_scratch: Path) -> None:
    namespace: dict = {"__name__": "readme"}
    report: list[str] = []
    runner = doctest.DocTestRunner(
        checker=NumbersWithin(), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    started = time.monotonic()
    for test in _python_blocks_as_doctests(namespace):
        runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)
    assert runner.tries == sum(len(t.examples) for t in _python_blocks_as_doctests({}))
    # The toy backend of the Backends section is a working one, not a sketch.
    assert namespace["mine"].requests_made > 0
    print(f"README python blocks: {runner.tries} examples in {time.monotonic() - started:.0f} s")


# -- the bash blocks -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``calibkit serve`` with the README's arguments, as a subprocess on a free port."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.args = list(args)
        self.shown_port = "8000"
        if "--port" in self.args:
            i = self.args.index("--port") + 1
            self.shown_port, self.args[i] = self.args[i], str(_free_port())
        else:
            self.args += ["--port", str(_free_port())]
        self.port = int(self.args[self.args.index("--port") + 1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"  # a file, not a pipe that nobody reads and that could fill
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "calibkit.cli", *self.args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"calibkit {' '.join(self.args)} exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"calibkit {' '.join(self.args)} did not answer /health in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def _check_served(served: Served, keys: dict[str, str]) -> None:
    """What the README says of the server: the models it names, and the keys file's keys (if any)."""
    import httpx

    headers = {}
    keys_file = _option(served.args, "--keys-file")
    if keys_file:
        assert keys_file in keys, f"the README serves {keys_file} before making a key in it"
        r = httpx.get(f"{served.base}/v1/models", timeout=10)
        assert r.status_code == 401, f"--keys-file given, yet a request without a key got {r.status_code}"
        headers = {"Authorization": f"Bearer {keys[keys_file]}"}
    names = [m["id"] for m in httpx.get(f"{served.base}/v1/models", headers=headers, timeout=10).json()["data"]]
    shown = [served.args[i + 1].split("=")[0] for i, a in enumerate(served.args) if a == "--model"]
    assert set(shown) <= set(names), f"served {names}, the README asked for {shown}"
    body = {"model": names[0], "prompt": "The capital of France is", "max_tokens": 1, "logprobs": 5}
    r = httpx.post(f"{served.base}/v1/completions", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][0]["logprobs"]["top_logprobs"][0]) >= 5


def _run_cli(args: list[str], line: int, capsys: pytest.CaptureFixture) -> str:
    from calibkit.cli import main

    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0, f"README.md:{line}: calibkit {' '.join(args)} exited {rc}:\n{err[-3000:]}"
    return out


@pytest.mark.model
@pytest.mark.parametrize("block", [b for b in BASH if any(c.startswith("calibkit") for _, c in bash_lines(b))],
                         ids=lambda b: b.id)
def test_bash_block_runs(block: Block, in_scratch: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    import calibkit as ck

    keys: dict[str, str] = {}  # keys file -> the last key created in it
    served: list[Served] = []
    ran, not_run = [], []
    try:
        for line, cmd in bash_lines(block):
            words = shlex.split(cmd)
            started = time.monotonic()
            if words[0] == "make":
                not_run.append(f"{cmd} ({NOT_RUN[cmd]})")
                continue
            if words[0] == "export":
                # export NAME=value ...; "<that key>" is the key the block created, the URL's
                # port the one the block's server was shown on.
                for name, value in re.findall(r"(\w+)=(<[^>]*>|\S+)", cmd[len("export"):]):
                    if value.startswith("<"):
                        assert len(keys) == 1, f"README.md:{line}: {value} names no key the block made"
                        value = next(iter(keys.values()))
                    for s in served:
                        value = value.replace(f":{s.shown_port}/", f":{s.port}/")
                    monkeypatch.setenv(name, value)
                if os.environ.get("ACS_API_BASE") and served:
                    # the variables are what Client.from_env reads: the API answers with them
                    with ck.Client.from_env(model=_option(served[-1].args, "--model") or None) as api:
                        assert api.top_k(["The capital of France is"], k=5)[0]
                ran.append((cmd, time.monotonic() - started))
                continue
            args = words[1:]
            missing = [a for a in args if a.startswith("../shared/") and not Path(a).exists()]
            if missing:
                not_run.append(f"{cmd} (no {missing[0]} here)")
                continue
            if args[0] == "serve":
                s = Served(args, in_scratch)
                served.append(s)
                s.wait_ready()
                _check_served(s, keys)
                ran.append((cmd, time.monotonic() - started))
                continue
            out = _run_cli(args, line, capsys)
            if args[:2] == ["keys", "create"]:
                keys[_option(args, "--keys-file")] = out.strip().splitlines()[-1]
                assert json.loads(Path(_option(args, "--keys-file")).read_text()), "the keys file is empty"
                assert keys[_option(args, "--keys-file")] not in Path(_option(args, "--keys-file")).read_text()
            elif args[0] == "peek":
                k = int(_option(args, "-k") or 20)
                assert f"top-{k} next tokens" in out, out
            elif args[0] == "score":
                assert re.search(r"accuracy\s+\d\.\d+", out), out
                if _option(args, "--out"):
                    assert Path(_option(args, "--out")).is_file()
            elif args[0] in ("eval", "calibrate"):
                report = re.search(r"report: (\S+index\.html)", out)
                assert report and Path(report.group(1)).is_file(), out
                calibrators = (_option(args, "--calibrators") or "").split(",")
                table = out[: report.start()]
                assert all(c in table for c in calibrators if c), f"calibrators missing from the table:\n{table}"
            ran.append((cmd, time.monotonic() - started))
    finally:
        for s in served:
            s.stop()
    assert ran
    for s in served:
        assert s.proc.returncode is not None
    print("\n".join([f"{t:5.1f} s  {cmd}" for cmd, t in ran] + [f"not run: {x}" for x in not_run]))


def test_every_test_the_reliability_table_names_exists() -> None:
    text = README.read_text()
    table = text[text.index("## Reliability"):text.index("## Layout")]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", table)
    assert len(named) >= 20
    for file, test in named:
        found = list((ROOT / "tests").rglob(file))
        assert len(found) == 1, f"README names {file}, and tests/ holds {len(found)} files of that name"
        source = found[0].read_text()
        assert re.search(rf"^def {test}\(", source, flags=re.M), f"README names {file}::{test}, which does not exist"

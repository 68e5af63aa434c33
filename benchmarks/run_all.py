"""Run every benchmark on this machine, one after another, and write benchmarks/RESULTS.md.

Each benchmark compares calibkit against its baselines in the same run, prints its
details, and ends with one ROW line (benchmarks/rows.py) per figure an issue or the
README sets a goal for. This collects those lines into one table at the top of
RESULTS.md (what, the figure now, its goal, whether it holds, which benchmark), then
records the machine it ran on (CPU model, cores, the instruction-set flags that move
llama.cpp's speed), the versions of what was measured and the wall time, then each
benchmark's output as printed (less its ROW lines). A benchmark that fails (or runs
past ``--timeout``) gets a row saying so, with its last line of stderr; the others
still run, and the exit status is nonzero. The table is printed at the end too.

    python benchmarks/run_all.py            # what `make bench` runs
    python benchmarks/run_all.py bench_scoring.py bench_serve.py   # some of them
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from rows import parse

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_scoring.py", "bench_serve.py", "bench_calibration.py", "bench_http.py", "bench_lmeval.py",
              "bench_transformers.py", "bench_gguf_conversion.py", "bench_ray.py", "bench_forms.py"]
VERSIONS = ["calibkit", "llama-cpp-python", "numpy", "scipy", "scikit-learn", "netcal", "torch",
            "lm-eval", "openai", "httpx", "transformers", "ray"]
FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma", "f16c"]
TIMEOUT_S = 600


@dataclass
class Result:
    """One benchmark's run: its figures (ROW lines), the rest of its output, and how it ended."""

    script: str
    rows: list[dict] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    returncode: int = 0
    seconds: float = 0.0


def machine() -> list[str]:
    """Markdown list items: when, the CPU (model, cores, flags), the system, and the versions measured."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = []
    for name in VERSIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- when: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu}, {os.cpu_count()} cores ({usable} usable by this process); flags: "
        f"{', '.join(f for f in FLAGS if f in flags) or 'none of ' + ', '.join(FLAGS)}",
        f"- {platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- {'; '.join(versions)}",
    ]


def run(script: str, timeout: float) -> Result:
    """Run one benchmark, echoing its output as it comes; a failure becomes a row that says so."""
    res = Result(script)
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        # Unbuffered, so that what a benchmark printed before it failed or was killed is kept.
        proc = subprocess.Popen([sys.executable, str(HERE / script)], stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=HERE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        timer = KillTimer(proc, timeout)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            figure = parse(line.rstrip("\n"))
            if figure is not None:
                res.rows.append(figure)
            else:
                res.details.append(line.rstrip("\n"))
        res.returncode = proc.wait()
        timer.cancel()
        err.seek(0)
        stderr = err.read()
    res.seconds = time.perf_counter() - t
    if res.returncode:
        print(stderr, end="", file=sys.stderr, flush=True)
        last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
        if timer.fired:
            last = f"killed after {timeout:g} s" + (f" ({last})" if last else "")
        last = last or f"exit status {res.returncode}"
        res.rows.append({"what": f"benchmark failed: {last}", "now": f"exit status {res.returncode}",
                         "goal": "runs", "holds": False})
        res.details += ["", f"(failed with exit status {res.returncode}; the end of its stderr:)",
                        *stderr.rstrip().splitlines()[-20:]]
    elif not res.rows:
        res.rows.append({"what": "(no ROW lines printed)", "now": "", "goal": "", "holds": None})
    return res


class KillTimer:
    """Kill ``proc`` if it is still running after ``seconds``; ``fired`` says whether it was."""

    def __init__(self, proc: subprocess.Popen, seconds: float):
        self.fired = False

        def kill() -> None:
            if proc.poll() is None:
                self.fired = True
                proc.kill()

        self._timer = threading.Timer(seconds, kill)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(results: list[Result]) -> list[str]:
    """The summary table: one line per figure, every benchmark's figures in the order they ran."""
    holds = {True: "yes", False: "NO", None: "—"}
    out = ["| what | now | goal | holds | benchmark |", "|---|---|---|---|---|"]
    for res in results:
        for r in res.rows:
            out.append(f"| {_cell(r.get('what', ''))} | {_cell(r.get('now', ''))} | {_cell(r.get('goal', ''))} "
                       f"| {holds.get(r.get('holds'), _cell(r.get('holds')))} | {res.script} |")
    return out


def heading(script: str) -> str:
    """The first line of a benchmark's module docstring."""
    parts = (HERE / script).read_text().split('"""')
    return parts[1].strip().splitlines()[0] if len(parts) > 2 else script


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scripts", nargs="*", default=BENCHMARKS, help="benchmarks to run (default: all)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per benchmark (default {TIMEOUT_S})")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write (default benchmarks/RESULTS.md)")
    args = ap.parse_args()
    about = machine()
    start = time.perf_counter()
    results: list[Result] = []
    for script in args.scripts:
        print(f"== {script}", flush=True)
        results.append(run(script, args.timeout))
        print(f"== {script}: {results[-1].seconds:.0f} s, exit status {results[-1].returncode}\n", flush=True)
    total = time.perf_counter() - start
    summary = table(results)
    times = ", ".join(f"{r.script} {r.seconds:.0f} s" for r in results)
    out = ["# Benchmark results", "",
           "Written by `make bench` (benchmarks/run_all.py); every ratio compares against a baseline measured "
           "in the same run on this machine. Each benchmark's section below says what is compared, under "
           "which llama.cpp settings.", "",
           *summary, "",
           "## Machine", "", *about, f"- wall time: {total:.0f} s in all ({times})", ""]
    for res in results:
        out += [f"## {res.script}", "", heading(res.script), "", "```", *_trim(res.details), "```", ""]
    args.out.write_text("\n".join(out))
    print("\n".join(summary))
    print(f"\n{len(results)} benchmarks in {total:.0f} s; wrote {args.out}")
    return 1 if any(r.returncode for r in results) else 0


def _trim(lines: list[str]) -> list[str]:
    """The lines without blank ones at either end."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return lines


if __name__ == "__main__":
    sys.exit(main())

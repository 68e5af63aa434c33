"""Run every benchmark on this machine, one after another, and write benchmarks/RESULTS.md.

Each benchmark compares calibkit against its baselines in the same run and prints the
ratios; this records their output as printed, under the machine it ran on (CPU model,
cores, the instruction-set flags that move llama.cpp's speed) and the versions of what
was measured. The README's figures are quoted from that file.

    python benchmarks/run_all.py            # what `make bench` runs
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_scoring.py", "bench_calibration.py"]
VERSIONS = ["calibkit", "llama-cpp-python", "numpy", "scipy", "scikit-learn", "netcal", "torch"]
FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma", "f16c"]


def machine() -> list[str]:
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
    return [
        f"- when: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu}, {os.cpu_count()} cores; flags: {', '.join(f for f in FLAGS if f in flags) or 'none of ' + ', '.join(FLAGS)}",
        f"- Python {platform.python_version()}; {'; '.join(versions)}",
    ]


def main() -> int:
    out = ["# Benchmark results", "", "Written by `make bench` (benchmarks/run_all.py); every ratio compares "
           "against a baseline measured in the same run on this machine.", "", *machine(), ""]
    status = 0
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        run = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True)
        print(run.stdout, end="", flush=True)
        if run.returncode:
            print(run.stderr, file=sys.stderr)
            status = run.returncode
        doc = (HERE / script).read_text().split('"""')[1].strip().splitlines()[0]
        out += [f"## {script}", "", doc, "", "```", run.stdout.rstrip() or run.stderr.rstrip(), "```", ""]
    (HERE / "RESULTS.md").write_text("\n".join(out))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The first TransformersModel load of a GGUF: one shared GGUF reader against transformers' three.

transformers opens a GGUF three times in one load (tokenizer, config, weights), and each
``gguf.GGUFReader`` parses every metadata array again. calibkit's engine hands those reads
one reader (``checkpoint.one_gguf_reader``). Each side runs in a fresh process with a fresh
cache folder, so each converts the bundled gemma-3-270m GGUF to float32 from scratch; the
time is the first load and one prompt's next-token log-probabilities, which must be equal.

    python benchmarks/bench_gguf_conversion.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rows import row

CHILD = r"""
import contextlib, json, sys, time
import numpy as np
import calibkit.backends.transformers.engine as engine
if sys.argv[1] == "three readers":  # what transformers does by itself
    engine.one_gguf_reader = contextlib.nullcontext
import calibkit as ck
from calibkit.backends.llamacpp.gguf import default_model_path
path = default_model_path(progress=False)
t = time.perf_counter()
lp = ck.TransformersModel(str(path), cache=False, progress=False).next_token_logprobs("Review: a fine film\nSentiment:")
print(json.dumps({"seconds": time.perf_counter() - t, "logprobs": np.asarray(lp[:2000], dtype=float).tolist()}))
"""


def run(side: str, models: Path) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        (Path(cache) / "models").mkdir()
        gguf = next(models.glob("*.gguf"))  # the assembled GGUF, not its conversion
        (Path(cache) / "models" / gguf.name).symlink_to(gguf)
        env = {**os.environ, "CALIBKIT_CACHE_DIR": cache, "TQDM_DISABLE": "1"}
        out = subprocess.run([sys.executable, "-c", CHILD, side], env=env, capture_output=True, text=True,
                             timeout=900, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from calibkit.backends.llamacpp.gguf import default_model_path

    models = Path(default_model_path(progress=False)).parent
    times: dict[str, list[float]] = {"one reader": [], "three readers": []}
    numbers = {}
    for _ in range(args.repeats):  # taking turns, so the machine's drift falls on both sides
        for side in times:
            r = run(side, models)
            times[side].append(r["seconds"])
            numbers[side] = r["logprobs"]
    best = {side: min(t) for side, t in times.items()}
    for side, t in times.items():
        print(f"{side:14s} first load + one prompt: " + ", ".join(f"{s:.1f} s" for s in t))
    equal = numbers["one reader"] == numbers["three readers"]
    print(f"equal log-probabilities: {equal}")
    ratio = best["three readers"] / best["one reader"]
    print(row("first TransformersModel load of the bundled GGUF (conversion to float32), one GGUF reader vs "
              "transformers' three", f"{ratio:.2f}x ({best['one reader']:.1f} s vs {best['three readers']:.1f} s)",
              "> 1x, equal numbers", ratio > 1 and equal))


if __name__ == "__main__":
    main()

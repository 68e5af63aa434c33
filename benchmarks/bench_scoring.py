"""Zero-shot SST-2 scoring with the embedded model: calibkit against two llama.cpp loops.

Scores the first N reviews of ../shared/data/sst2/dev.txt with the template
"Review: {text}\\nSentiment:" and the forms " positive" / " negative", three ways, in
one run on one machine:

- calibkit: ``ck.score(..., ck.LocalModel(cache=False), method="exact")``;
- bare: llama-cpp-python's ``Llama(logits_all=False)``: reset, eval, read the last
  position's logits, log-softmax in numpy;
- create_completion: ``Llama(logits_all=True).create_completion(max_tokens=1,
  logprobs=20)``, a label missing from the top-20 counting as -inf.

It prints accuracy and examples/s of each and the ratios (goals: calibkit >= 0.9x
bare, >= 5x create_completion). The three take turns, a round of examples each.

    python benchmarks/bench_scoring.py [--n 300] [--round 50] [--data ../shared/data/sst2/dev.txt]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

import calibkit as ck

TEMPLATE = "Review: {text}\nSentiment:"
FORMS = {0: " negative", 1: " positive"}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "dev.txt"


def load(path: Path, n: int) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()[:n]
    return [line[2:] for line in lines], np.array([int(line[0]) for line in lines])


def calibkit_scorer():
    model = ck.LocalModel(cache=False)
    model.token_ids(" warm-up")  # loads the model outside the timed part, as the loops below do

    def run(texts: list[str]) -> np.ndarray:
        scores = ck.score(texts, TEMPLATE, FORMS, model, method="exact", progress=False, check=False)
        return np.argmax(scores.logprobs, axis=1)

    return run


def bare_scorer(path: str):
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=2048, logits_all=False, verbose=False, n_threads=os.cpu_count())
    ids = [llm.tokenize(f.encode(), add_bos=False)[0] for f in FORMS.values()]

    def run(texts: list[str]) -> np.ndarray:
        preds = []
        for text in texts:
            llm.reset()
            llm.eval(llm.tokenize(TEMPLATE.format(text=text).encode(), add_bos=True))
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
            x = logits.astype(np.float64)
            lp = x - (x.max() + math.log(np.exp(x - x.max()).sum()))
            preds.append(int(np.argmax(lp[ids])))
        return np.array(preds)

    return run


def create_completion_scorer(path: str):
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=2048, logits_all=True, verbose=False, n_threads=os.cpu_count())

    def run(texts: list[str]) -> np.ndarray:
        preds = []
        for text in texts:
            out = llm.create_completion(TEMPLATE.format(text=text), max_tokens=1, logprobs=20, temperature=0)
            top = out["choices"][0]["logprobs"]["top_logprobs"][0]
            preds.append(int(np.argmax([top.get(f, -math.inf) for f in FORMS.values()])))
        return np.array(preds)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="examples to score (default 300)")
    ap.add_argument("--round", type=int, default=50, help="examples per round (default 50)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    args = ap.parse_args()
    texts, y = load(args.data, args.n)
    path = ck.LocalModel(cache=False).model_path
    methods = {
        "calibkit": calibkit_scorer(),
        "bare llama.cpp loop": bare_scorer(path),
        "create_completion(logprobs=20)": create_completion_scorer(path),
    }
    # The methods take turns, a round of examples each, so that load from anything
    # else on the machine falls on all of them alike.
    preds: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for s in range(0, len(texts), args.round):
        chunk = texts[s : s + args.round]
        for name, run in methods.items():
            t = time.perf_counter()
            preds[name].append(run(chunk))
            seconds[name] += time.perf_counter() - t
    rate = {}
    for name in methods:
        acc = float((np.concatenate(preds[name]) == y).mean())
        rate[name] = len(texts) / seconds[name]
        print(f"{name:32s} accuracy {acc:.3f}   {rate[name]:7.2f} examples/s")
    ours = rate["calibkit"]
    print(f"\ncalibkit / bare loop:          {ours / rate['bare llama.cpp loop']:.2f}x   (goal >= 0.9x)")
    print(f"calibkit / create_completion:  {ours / rate['create_completion(logprobs=20)']:.2f}x   (goal >= 5x)")


if __name__ == "__main__":
    main()

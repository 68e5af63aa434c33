"""Zero-shot SST-2 scoring with the embedded model: calibkit against two llama.cpp loops.

Scores the first N reviews of ../shared/data/sst2/dev.txt with the template
"Review: {text}\\nSentiment:" and the forms " positive" / " negative", three ways, in
one run on one machine:

- calibkit: ``ck.score(..., ck.LocalModel(cache=False), method="exact")``;
- bare: llama-cpp-python's ``Llama(logits_all=False)``: reset, eval, read the last
  position's logits, log-softmax in numpy;
- create_completion: ``Llama(logits_all=True).create_completion(max_tokens=1,
  logprobs=20)``, a label missing from the top-20 counting as -inf.

It prints accuracy and examples/s of each and the ratios (goals: calibkit >= 1.0x
bare, >= 5x create_completion). The three take turns, a round of examples each.

Then few-shot prefix reuse: the same reviews behind ``--shots`` demonstrations from
train.txt, scored exactly by calibkit (the demonstrations' key/value cache reused from
one prompt to the next) and by the same model with its cache cleared before every
prompt (recomputing it all); the scores must be identical, the ratio is the speed-up
(goal >= 3x).

All with llama.cpp's settings as calibkit sets them: n_batch = n_ubatch = 64, flash
attention on, n_threads = the machine's cores (the bare and create_completion loops
use llama-cpp-python's defaults for the rest).

    python benchmarks/bench_scoring.py [--n 300] [--round 50] [--shots 8] [--n-shot 60]
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


def fewshot(texts: list[str], train: Path, shots: int) -> tuple[float, float, bool]:
    """examples/s with prefix reuse, without it, and whether their scores are identical."""
    lines = train.read_text().splitlines()[:shots]
    demos = [({"text": line[2:]}, int(line[0])) for line in lines]
    tpl = ck.PromptTemplate(TEMPLATE, demonstrations=demos)
    model = ck.LocalModel(cache=False)

    def reuse() -> np.ndarray:
        return ck.score(texts, tpl, FORMS, model, method="exact", progress=False, check=False).logprobs

    def recompute() -> np.ndarray:
        rows = []
        for text in texts:
            model.engine.reset()  # nothing of the previous prompt is kept
            rows.append(ck.score([text], tpl, FORMS, model, method="exact", progress=False, check=False).logprobs)
        return np.concatenate(rows)

    reuse()  # warm: the first prompt decodes the demonstrations once
    t = time.perf_counter()
    a = reuse()
    t_reuse = time.perf_counter() - t
    model.engine.reset()
    t = time.perf_counter()
    b = recompute()
    t_recompute = time.perf_counter() - t
    return len(texts) / t_reuse, len(texts) / t_recompute, bool(np.array_equal(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="examples to score (default 300)")
    ap.add_argument("--round", type=int, default=50, help="examples per round (default 50)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    ap.add_argument("--shots", type=int, default=8, help="demonstrations for the prefix-reuse part (0 skips it)")
    ap.add_argument("--n-shot", type=int, default=60, help="examples scored in the prefix-reuse part")
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
    print(f"\ncalibkit / bare loop:          {ours / rate['bare llama.cpp loop']:.2f}x   (goal >= 1.0x)")
    print(f"calibkit / create_completion:  {ours / rate['create_completion(logprobs=20)']:.2f}x   (goal >= 5x)")
    if args.shots:
        fast, slow, same = fewshot(texts[: args.n_shot], args.data.parent / "train.txt", args.shots)
        print(f"\n{args.shots}-shot, prefix reuse:        {fast:7.2f} examples/s")
        print(f"{args.shots}-shot, recomputing:         {slow:7.2f} examples/s   scores identical: {same}")
        print(f"prefix reuse / recomputing:    {fast / slow:.2f}x   (goal >= 3x)")


if __name__ == "__main__":
    main()

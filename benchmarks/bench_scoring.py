"""Zero-shot SST-2 scoring with the embedded model: calibkit against two llama.cpp loops.

Scores the first N reviews of ../shared/data/sst2/dev.txt with the template
"Review: {text}\\nSentiment:" and the forms " positive" / " negative", three ways, in
one run on one machine:

- calibkit: ``ck.score(..., ck.LocalModel(cache=False), method="exact")``;
- bare: llama-cpp-python's ``Llama(logits_all=False)``: reset, eval, read the last
  position's logits, log-softmax in numpy;
- create_completion: ``Llama(logits_all=True).create_completion(max_tokens=1,
  logprobs=20)``, a label missing from the top-20 counting as -inf.

Both Llama loops load the model as the engine does (``loads_as_the_engine``: the
weights as the file holds them, not repacked for the CPU).

It prints accuracy and examples/s of each and the ratios (goals: calibkit >= 1.0x
bare, >= 5x create_completion). The three take turns, a round of examples each.

Then few-shot prefix reuse: the same reviews behind ``--shots`` demonstrations from
train.txt, scored exactly by calibkit (the demonstrations' key/value cache reused from
one prompt to the next) and by the same model with its cache cleared before every
prompt (recomputing it all); the scores must be identical, the ratio is the speed-up
(goal >= 3x).

Then AG News (the first ``--n-agnews`` rows of ../shared/data/agnews/test.csv, the
template "Title: {title}\nNews: {description}\nCategory:") with 5 forms of 1-3 tokens
for its 4 classes (" World", " Sports", " Business", and " Technology" or " Science
and technology" for Sci/Tech), each example on an emptied key/value cache, two ways:
calibkit's exact scoring of all 5 forms (``ck.score(..., method="exact")``) against the
prompt-only prefill (``LocalModel.top_k([prompt], 1)``: the prompt decoded, nothing
after it). Only the call for one example is timed; the ratio is what scoring the
forms exactly adds to reading the prompt (goal <= 1.15x).

calibkit's side runs with llama.cpp's settings as calibkit sets them: n_batch =
n_ubatch = 32, every decode padded to that canonical batch shape (so that a cached
prefix or forms decoded side by side give the numbers of a fresh decode), flash
attention on, n_threads = the machine's cores. The bare and create_completion loops
use llama-cpp-python's defaults (n_batch = n_ubatch = 512, no padding, flash attention
off) with the same n_threads. Each figure ends in a ROW line (benchmarks/rows.py) for
run_all.py's table.

    python benchmarks/bench_scoring.py [--n 60] [--round 20] [--shots 8] [--n-shot 30] [--n-agnews 30]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

import calibkit as ck
from calibkit.backends.llamacpp.engine import loads_as_the_engine
from calibkit.datasets import read_agnews
from rows import row
from turns import take_turns

TEMPLATE = "Review: {text}\nSentiment:"
FORMS = {0: " negative", 1: " positive"}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "dev.txt"
AGNEWS_DATA = DEFAULT_DATA.parents[1] / "agnews" / "test.csv"
AGNEWS_ROUND = 10  # examples per turn: short turns, as the load on a shared machine changes within seconds
AGNEWS_TEMPLATE = "Title: {title}\nNews: {description}\nCategory:"
# 5 forms of 1-3 gemma-3 tokens for the 4 classes: " Science and technology" is 3.
AGNEWS_FORMS = {"World": " World", "Sports": " Sports", "Business": " Business",
                "Sci/Tech": [" Technology", " Science and technology"]}


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


def bare_last_row(llm, prompt: str) -> np.ndarray:
    """The next-token log-probabilities after ``prompt`` by a bare llama_cpp.Llama: a fresh
    decode, the last row's logits, log-softmax in float64."""
    import llama_cpp

    llm.reset()
    llm.eval(llm.tokenize(prompt.encode(), add_bos=True))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    x = logits.astype(np.float64)
    return x - (x.max() + math.log(np.exp(x - x.max()).sum()))


def bare_scorer(path: str):
    import llama_cpp

    with loads_as_the_engine():
        llm = llama_cpp.Llama(path, n_ctx=2048, logits_all=False, verbose=False, n_threads=os.cpu_count())
    ids = [llm.tokenize(f.encode(), add_bos=False)[0] for f in FORMS.values()]

    def run(texts: list[str]) -> np.ndarray:
        return np.array([int(np.argmax(bare_last_row(llm, TEMPLATE.format(text=t))[ids])) for t in texts])

    return run


def create_completion_scorer(path: str):
    import llama_cpp

    with loads_as_the_engine():
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


def agnews(path: Path, n: int, per_round: int) -> tuple[float, float, float]:
    """Seconds of exact scoring of the 5 forms, seconds of the prompt-only prefill (both summed
    over the first ``n`` examples, each on an emptied cache), and the exact scores' accuracy."""
    ds = read_agnews(path).head(n)
    tpl = ck.PromptTemplate(AGNEWS_TEMPLATE)
    examples = ds.frame[ds.fields].to_dict("records")
    prompts = [tpl.format(ex) for ex in examples]
    model = ck.LocalModel(cache=False)
    verb = ck.Verbalizer(AGNEWS_FORMS)
    for f in verb.all_forms:
        assert 1 <= len(model.tokenize(f)) <= 3, (f, model.tokenize(f))

    def exact(i: int) -> np.ndarray:
        return ck.score([examples[i]], tpl, verb, model, method="exact", progress=False, check=False).logprobs[0]

    def prefill(i: int) -> object:
        return model.top_k([prompts[i]], 1)

    exact(0), prefill(0)  # warm
    seconds = {"exact": 0.0, "prefill": 0.0}
    rows: list[np.ndarray] = []
    # The two take turns, a round of examples each, as above.
    for s in range(0, len(prompts), per_round):
        for name, run in (("exact", exact), ("prefill", prefill)):
            for i in range(s, min(s + per_round, len(prompts))):
                model.engine.reset()  # each example decodes afresh: no prefix of the previous one is kept
                t = time.perf_counter()
                out = run(i)
                seconds[name] += time.perf_counter() - t
                if name == "exact":
                    rows.append(out)  # type: ignore[arg-type]
    pred = np.argmax(np.stack(rows), axis=1)
    acc = float((np.array(verb.classes, dtype=object)[pred] == ds.y).mean())
    return seconds["exact"], seconds["prefill"], acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="examples to score (default 60)")
    ap.add_argument("--round", type=int, default=20, help="examples per round (default 20)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    ap.add_argument("--shots", type=int, default=8, help="demonstrations for the prefix-reuse part (0 skips it)")
    ap.add_argument("--n-shot", type=int, default=30, help="examples scored in the prefix-reuse part (default 30)")
    ap.add_argument("--n-agnews", type=int, default=30, help="AG News examples, exact vs prefill (default 30; 0 skips it)")
    ap.add_argument("--agnews-data", type=Path, default=AGNEWS_DATA, help="AG News test.csv")
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
    preds, seconds = take_turns(methods, texts, args.round)
    rate = {}
    for name in methods:
        acc = float((np.concatenate(preds[name]) == y).mean())
        rate[name] = len(texts) / seconds[name]
        print(f"{name:32s} accuracy {acc:.3f}   {rate[name]:7.2f} examples/s")
    ours, bare, cc = rate["calibkit"], rate["bare llama.cpp loop"], rate["create_completion(logprobs=20)"]
    print(f"\ncalibkit / bare loop:          {ours / bare:.2f}x   (goal >= 1.0x)")
    print(f"calibkit / create_completion:  {ours / cc:.2f}x   (goal >= 5x)")
    rows = [
        row(f"zero-shot SST-2 (n = {len(texts)}), calibkit exact vs a bare llama.cpp loop",
            f"{ours / bare:.2f}x ({ours:.1f} vs {bare:.1f} examples/s)", ">= 1.0x", ours / bare >= 1.0),
        row(f"zero-shot SST-2 (n = {len(texts)}), calibkit exact vs create_completion(logprobs=20)",
            f"{ours / cc:.2f}x ({ours:.1f} vs {cc:.1f} examples/s)", ">= 5x", ours / cc >= 5.0),
    ]
    if args.shots:
        fast, slow, same = fewshot(texts[: args.n_shot], args.data.parent / "train.txt", args.shots)
        print(f"\n{args.shots}-shot, prefix reuse:        {fast:7.2f} examples/s")
        print(f"{args.shots}-shot, recomputing:         {slow:7.2f} examples/s   scores identical: {same}")
        print(f"prefix reuse / recomputing:    {fast / slow:.2f}x   (goal >= 3x)")
        rows.append(row(f"{args.shots}-shot SST-2 (n = {args.n_shot}), prefix reuse vs recomputing",
                        f"{fast / slow:.2f}x ({fast:.1f} vs {slow:.1f} examples/s)"
                        + ("; scores identical" if same else "; scores DIFFER"),
                        ">= 3x and scores identical", fast / slow >= 3.0 and same))
    if args.n_agnews:
        t_exact, t_prefill, acc = agnews(args.agnews_data, args.n_agnews, AGNEWS_ROUND)
        ratio = t_exact / t_prefill
        n = args.n_agnews
        print(f"\nAG News (n = {n}), 5 forms exact:  {n / t_exact:7.2f} examples/s   accuracy {acc:.3f}")
        print(f"AG News (n = {n}), prompt prefill:  {n / t_prefill:7.2f} examples/s")
        print(f"exact / prefill time:          {ratio:.2f}x   (goal <= 1.15x)")
        rows.append(row(f"AG News (n = {n}), 5 forms of 1-3 tokens exact vs the prompt-only prefill",
                        f"{ratio:.2f}x the time ({n / t_exact:.1f} vs {n / t_prefill:.1f} examples/s; "
                        f"accuracy {acc:.3f})", "<= 1.15x", ratio <= 1.15))
    print()
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()

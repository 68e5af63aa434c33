"""TransformersModel (float32) against the embedded LocalModel (llama.cpp, Q4_K_M): speed, and how far apart their numbers are.

Both run google/gemma-3-270m from the bundled GGUF: ``ck.LocalModel`` through
llama.cpp's Q4_K_M kernels, ``ck.TransformersModel`` through transformers with the
same weights dequantized to float32 (converted once and kept; a run that has to
convert says so and times it apart). Each model's load is timed on its own, before
anything is scored.

1. Zero-shot SST-2, the first ``--n`` reviews of ../shared/data/sst2/dev.txt,
   "Review: {text}\\nSentiment:" with " negative" / " positive",
   ``ck.score(..., method="exact")``, ``cache=False``, default thread counts: the two
   take turns (turns.py), ``--round`` examples each. Examples/s of each, their ratio,
   and how often the argmax agrees.
2. The float32 reference for the quantized default: the label log-probabilities of
   both on those SST-2 reviews and on the first ``--n-agnews`` rows of
   ../shared/data/agnews/test.csv (the bundled template "Title: {title}\\nNews:
   {description}\\nCategory:" and bench_scoring's 5 forms of 1-3 tokens, so that the
   multi-token path is compared too): mean and max |difference| in nats over every
   form's log-probability, and the argmax agreement.
3. For scale, llama.cpp against itself: a plain ``llama_cpp.Llama(logits_all=False)``
   over the same GGUF (llama-cpp-python's defaults: n_batch 512, no padding) with
   flash attention off and on, the SST-2 prompts' label log-probabilities (a
   log-softmax over the whole vocabulary of the last row): the mean gap between the
   two, and each one's gap to transformers (``--no-flash-check`` skips this).

Settings of the two sides are printed; each figure ends in a ROW line (rows.py).

    python benchmarks/bench_transformers.py [--n 200] [--round 50] [--n-agnews 100]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import calibkit as ck
from bench_scoring import AGNEWS_DATA, AGNEWS_FORMS, DEFAULT_DATA, FORMS, TEMPLATE, bare_last_row, load
from calibkit.backends.llamacpp.engine import loads_as_the_engine
from calibkit.datasets import read_agnews
from rows import row
from turns import take_turns

AGREE_GOAL = 0.95


def load_transformers() -> tuple[ck.TransformersModel, float, float | None]:
    """The model loaded on the CPU; seconds of the load from the converted checkpoint, and of the
    conversion where this run had to make it (None where it was there already)."""
    from calibkit.backends.transformers import engine as te
    from calibkit.backends.transformers.checkpoint import converted_gguf_folder

    model = ck.TransformersModel(device="cpu", cache=False, progress=False)
    converted = (converted_gguf_folder(model.source) / ".converted").is_file()
    t = time.perf_counter()
    model.engine
    first = time.perf_counter() - t
    if converted:
        return model, first, None
    # It converted (and loaded from the GGUF): load again, from the checkpoint it kept.
    te._ENGINES.clear()
    t = time.perf_counter()
    model.engine
    return model, time.perf_counter() - t, first


def scorer(model: ck.Backend, template, verbalizer):
    def run(examples) -> ck.LabelScores:
        return ck.score(examples, template, verbalizer, model, method="exact", progress=False, check=False)

    return run


def gaps(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float(d.mean()), float(d.max())


def plain_llama(path: str, prompts: list[str], flash: bool) -> np.ndarray:
    """(n, 2) label log-probabilities from a plain llama_cpp.Llama (defaults but flash_attn)."""
    import llama_cpp

    with loads_as_the_engine():
        llm = llama_cpp.Llama(path, n_ctx=2048, logits_all=False, verbose=False, flash_attn=flash,
                              n_threads=os.cpu_count())
    ids = [llm.tokenize(f.encode(), add_bos=False) for f in FORMS.values()]
    assert all(len(i) == 1 for i in ids), ids
    ids = [i[0] for i in ids]
    out = np.array([bare_last_row(llm, p)[ids] for p in prompts])
    llm.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="SST-2 examples (default 200)")
    ap.add_argument("--round", type=int, default=50, help="examples per turn (default 50)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    ap.add_argument("--n-agnews", type=int, default=100, help="AG News examples (default 100; 0 skips them)")
    ap.add_argument("--agnews-data", type=Path, default=AGNEWS_DATA, help="AG News test.csv")
    ap.add_argument("--no-flash-check", action="store_true", help="skip llama.cpp flash attention on vs off")
    args = ap.parse_args()
    import torch

    texts, y = load(args.data, args.n)

    local = ck.LocalModel(cache=False)
    t = time.perf_counter()
    local.token_ids(" warm-up")  # loads the model
    t_local = time.perf_counter() - t
    hf, t_hf, t_convert = load_transformers()
    lm = hf.engine
    attn = getattr(lm.model.config, "_attn_implementation", "?")

    print("llama.cpp (LocalModel):    gemma-3-270m Q4_K_M GGUF, flash attention on (engine.py sets "
          f"LLAMA_FLASH_ATTN_TYPE_ENABLED), padded decode schedule, n_batch = n_ubatch = {local.n_batch}, "
          f"n_threads = {local.n_threads}")
    print(f"transformers (TransformersModel): the same GGUF dequantized to {hf._dtype}, {attn} attention, "
          f"{lm.device}, torch threads = {torch.get_num_threads()}, padding {hf.padding_side}, "
          f"max_batch_tokens = {hf.batch_tokens}")
    print(f"load: LocalModel {t_local:.1f} s; TransformersModel {t_hf:.1f} s from the converted checkpoint"
          + (f" (this run converted the GGUF first: {t_convert:.1f} s)" if t_convert is not None
             else " (converted before this run)"))

    # Warm both outside the timed part (first forward passes, allocator, tokenizer).
    for run in (scorer(local, TEMPLATE, FORMS), scorer(hf, TEMPLATE, FORMS)):
        run(texts[:2])
    methods = {"LocalModel (llama.cpp Q4_K_M)": scorer(local, TEMPLATE, FORMS),
               "TransformersModel (float32)": scorer(hf, TEMPLATE, FORMS)}
    outs, seconds = take_turns(methods, texts, args.round)
    sst = {name: np.concatenate([s.form_logprobs for s in outs[name]]) for name in methods}
    rate = {name: len(texts) / seconds[name] for name in methods}
    (n_local, n_hf) = methods
    print(f"\nzero-shot SST-2, n = {len(texts)}, exact, turns of {args.round}")
    for name in methods:
        acc = float((np.argmax(sst[name], axis=1) == y).mean())
        print(f"  {name:32s} accuracy {acc:.3f}   {rate[name]:7.2f} examples/s")
    ratio = rate[n_hf] / rate[n_local]
    agree = float((np.argmax(sst[n_local], axis=1) == np.argmax(sst[n_hf], axis=1)).mean())
    mean_sst, max_sst = gaps(sst[n_local], sst[n_hf])
    print(f"  TransformersModel / LocalModel examples/s:  {ratio:.2f}x")
    print(f"  argmax agreement: {agree:.3f}   (goal >= {AGREE_GOAL:.2f})")
    print(f"  label log-probabilities, |float32 - Q4_K_M|: mean {mean_sst:.3f} nats, max {max_sst:.3f} nats")
    rows = [
        row(f"zero-shot SST-2 (n = {len(texts)}), TransformersModel float32 vs LocalModel Q4_K_M, CPU",
            f"{ratio:.2f}x ({rate[n_hf]:.1f} vs {rate[n_local]:.1f} examples/s)", "", None),
        row(f"zero-shot SST-2 (n = {len(texts)}), argmax agreement, TransformersModel float32 vs LocalModel Q4_K_M",
            f"{agree:.1%}", f">= {AGREE_GOAL:.0%}", agree >= AGREE_GOAL),
        row(f"zero-shot SST-2 (n = {len(texts)}), label log-prob gap float32 vs Q4_K_M",
            f"mean {mean_sst:.3f}, max {max_sst:.3f} nats", "", None),
    ]

    if args.n_agnews:
        ds = read_agnews(args.agnews_data).head(args.n_agnews)
        verb = ck.Verbalizer(AGNEWS_FORMS)
        got = {}
        for name, model in ((n_local, local), (n_hf, hf)):
            t = time.perf_counter()
            got[name] = scorer(model, ds.template, verb)(ds.X)
            got[name + " s"] = time.perf_counter() - t
        a, b = got[n_local], got[n_hf]
        mean_ag, max_ag = gaps(a.form_logprobs, b.form_logprobs)
        agree_ag = float((np.argmax(a.logprobs, axis=1) == np.argmax(b.logprobs, axis=1)).mean())
        classes = np.array(a.classes, dtype=object)
        acc = {k: float((classes[np.argmax(s.logprobs, axis=1)] == ds.y).mean()) for k, s in ((n_local, a), (n_hf, b))}
        print(f"\nAG News, n = {len(ds)} (test.csv), 5 forms of 1-3 tokens, exact")
        for name in (n_local, n_hf):
            print(f"  {name:32s} accuracy {acc[name]:.3f}   {len(ds) / got[name + ' s']:7.2f} examples/s (not in turns)")
        print(f"  argmax agreement: {agree_ag:.3f}")
        print(f"  form log-probabilities, |float32 - Q4_K_M|: mean {mean_ag:.3f} nats, max {max_ag:.3f} nats")
        rows.append(row(f"AG News (n = {len(ds)}), 5 forms, log-prob gap float32 vs Q4_K_M",
                        f"mean {mean_ag:.3f}, max {max_ag:.3f} nats; argmax agreement {agree_ag:.1%}", "", None))

    if not args.no_flash_check:
        prompts = [TEMPLATE.format(text=x) for x in texts]
        off = plain_llama(local.model_path, prompts, flash=False)
        on = plain_llama(local.model_path, prompts, flash=True)
        m_fa, x_fa = gaps(off, on)
        print(f"\nllama.cpp against itself, plain llama_cpp.Llama (n_batch 512, no padding), SST-2 n = {len(texts)}:")
        print(f"  flash attention off vs on:            mean {m_fa:.3f} nats, max {x_fa:.3f} nats")
        for what, lp in (("off", off), ("on", on)):
            m, x = gaps(lp, sst[n_hf])
            print(f"  flash attention {what:3s} vs transformers:  mean {m:.3f} nats, max {x:.3f} nats")
        m, x = gaps(on, sst[n_local])
        print(f"  flash attention on vs LocalModel:     mean {m:.3f} nats, max {x:.3f} nats   (padded n_batch 32 vs plain 512)")
        rows.append(row(f"zero-shot SST-2 (n = {len(texts)}), llama.cpp flash attention off vs on (plain Llama)",
                        f"mean {m_fa:.3f}, max {x_fa:.3f} nats", "", None))
    print()
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()

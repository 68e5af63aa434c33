"""Label words found by ck.search_forms on SST-2's train split, against " positive" / " negative" on its dev split.

``ck.search_forms`` runs on a stratified random sample of ``--n-train`` rows of
../shared/data/sst2/train.txt (seed ``--seed``; ``--n-train 0`` takes all 6,920),
with the template "Review: {text}\\nSentiment:", the candidates " negative" and
" positive", ``--proposed`` words per class proposed from the whole vocabulary, and
its defaults otherwise (contextual calibration then temperature scaling, 5-fold
cross-validated NLL). It prints the table of every candidate tried.

Then both verbalizers, the one found and " negative" / " positive", score all of
../shared/data/sst2/dev.txt, and each is corrected by contextual calibration (Zhao et
al. 2021: the content-free inputs "N/A", "" and "[MASK]" through the same prompt; no
labels used). The figures are dev accuracy and NLL of each, whichever way they fall.

The embedded model (gemma-3-270m Q4_K_M) with llama.cpp's settings as calibkit sets
them: n_batch = n_ubatch = 32, padded decodes, flash attention on, n_threads = the
machine's cores; exact scoring on both sides.

    python benchmarks/bench_forms.py [--n-train 1000] [--proposed 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import calibkit as ck
from bench_scoring import DEFAULT_DATA, FORMS, TEMPLATE, load
from rows import row

TRAIN_DATA = DEFAULT_DATA.with_name("train.txt")


def sample(texts: list[str], y: np.ndarray, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A stratified random sample of n rows (all of them where n is 0 or at least their number)."""
    if not n or n >= len(texts):
        return texts, y
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(texts)), train_size=n, random_state=seed, stratify=y)
    keep = np.sort(keep)
    return [texts[i] for i in keep], y[keep]


def dev_figures(model, verbalizers: dict[str, ck.Verbalizer]) -> dict[str, tuple[float, float, float]]:
    """Each verbalizer's dev accuracy, and accuracy and NLL after contextual calibration."""
    texts, y = load(DEFAULT_DATA, 10**9)
    out = {}
    for name, v in verbalizers.items():
        s = ck.score(texts, TEMPLATE, v, model, method="exact", progress=False, check=False)
        cf = ck.content_free_scores(TEMPLATE, v, model, method="exact", progress=False)
        p = ck.ContextualCalibration(content_free=np.asarray(cf), classes=v.classes).fit(s).predict_proba(s)
        out[name] = (ck.metrics.accuracy(y, s.probs), ck.metrics.accuracy(y, p), ck.metrics.nll(y, p))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1000, help="train rows to search on (0: all; default 1000)")
    ap.add_argument("--proposed", type=int, default=10, help="words proposed per class (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    texts, y = load(TRAIN_DATA, 10**9)
    n_all = len(texts)
    texts, y = sample(texts, y, args.n_train, args.seed)
    model = ck.LocalModel()
    searches = {}
    for name, candidates in (("with the reference as candidates", {c: [f] for c, f in FORMS.items()}),
                             ("the model's proposals alone", None)):
        t = time.perf_counter()
        found = ck.search_forms(texts, y, TEMPLATE, model, candidates=candidates, n_proposed=args.proposed,
                                random_state=args.seed, progress=False)
        took = time.perf_counter() - t
        print(f"search_forms, {name}, on {len(texts)} of {n_all} SST-2 train rows (stratified, seed {args.seed}): "
              f"{took:.0f} s, {len(found.table)} candidates")
        with pd.option_context("display.width", 160, "display.max_rows", 200,
                               "display.float_format", "{:.4f}".format):
            print(found.table.to_string(index=False))
        print(f"found: {found.verbalizer}\n")
        searches[name] = found.verbalizer

    ref = ck.Verbalizer(FORMS)
    figs = dev_figures(model, {**searches, "reference": ref})
    n_dev = len(load(DEFAULT_DATA, 10**9)[0])
    print(f"SST-2 dev (n = {n_dev}), contextual calibration:")
    for name, v in (*searches.items(), ("reference", ref)):
        raw, acc, nll = figs[name]
        print(f"  {_words(v):<26} accuracy {acc:.3f} (uncorrected {raw:.3f})   NLL {nll:.4f}   ({name})")
    _, a_r, n_r = figs["reference"]
    for name, v in searches.items():
        _, a_f, n_f = figs[name]
        print(row(f"SST-2 dev (n = {n_dev}), after contextual calibration: label words found by search_forms on "
                  f"{len(texts)} train rows, {name} ({_words(v)}) vs ' negative'/' positive'",
                  f"accuracy {a_f:.3f} vs {a_r:.3f}; NLL {n_f:.4f} vs {n_r:.4f}", "", None))
    return 0


def _words(v: ck.Verbalizer) -> str:
    return "/".join(repr(v.form_of(c)) for c in v.classes)


if __name__ == "__main__":
    raise SystemExit(main())

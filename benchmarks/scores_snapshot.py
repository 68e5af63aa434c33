"""Snapshot the embedded model's SST-2 scores, to show that a change moved no number.

Scores ../shared/data/sst2/dev.txt with the embedded model (llama.cpp settings as
calibkit sets them: n_batch = 32, every decode padded, flash attention on, all cores): every
review exactly, the first 300 with top-k (k = 20) and with auto, 100 with two-token
forms and 100 behind 8 demonstrations; saves each LabelScores' arrays to an .npz.
With ``--compare``, says for each array whether it equals the other snapshot's bit for
bit. To compare two versions, run it under each (e.g. an older checkout on PYTHONPATH):

    PYTHONPATH=/path/to/old/checkout python benchmarks/scores_snapshot.py old.npz
    python benchmarks/scores_snapshot.py new.npz --compare old.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import calibkit as ck

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
TEMPLATE = "Review: {text}\nSentiment:"
FORMS = {0: " negative", 1: " positive"}
TWO_TOKEN_FORMS = {0: [" negative", " terrible film"], 1: [" positive", " wonderful movie"]}


def snapshot(path: Path) -> dict[str, np.ndarray]:
    lines = (DATA / "dev.txt").read_text().splitlines()
    texts = [line[2:] for line in lines]
    demos = [({"text": line[2:]}, int(line[0])) for line in (DATA / "train.txt").read_text().splitlines()[:8]]
    runs = {
        "exact": (TEMPLATE, FORMS, "exact", len(texts)),
        "topk": (TEMPLATE, FORMS, "topk", 300),
        "auto": (TEMPLATE, FORMS, "auto", 300),
        "two_token": (TEMPLATE, TWO_TOKEN_FORMS, "exact", 100),
        "fewshot": (ck.PromptTemplate(TEMPLATE, demonstrations=demos), FORMS, "exact", 100),
    }
    model = ck.LocalModel(cache=False)
    out: dict[str, np.ndarray] = {}
    for name, (tpl, forms, method, n) in runs.items():
        s = ck.score(texts[:n], tpl, forms, model, method=method, k=20 if method != "exact" else None,
                     progress=False, check=False)
        for field in ("logprobs", "censored", "form_logprobs", "exact"):
            out[f"{name}.{field}"] = getattr(s, field)
        print(f"{name:10s} {n:4d} examples scored", flush=True)
    np.savez(path, **out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the .npz to write")
    ap.add_argument("--compare", type=Path, help="another snapshot to compare with, array by array")
    args = ap.parse_args()
    ours = snapshot(args.out)
    if args.compare is None:
        return 0
    theirs = np.load(args.compare)
    same = [k for k in ours if k in theirs.files and np.array_equal(ours[k], theirs[k])]
    for k in ours:
        print(f"{k:26s} {'identical' if k in same else 'DIFFERS'}")
    print(f"{len(same)} of {len(ours)} arrays identical")
    return 0 if len(same) == len(ours) else 1


if __name__ == "__main__":
    sys.exit(main())

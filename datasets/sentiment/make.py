"""Writes datasets/sentiment/data.csv: short movie-review sentences, written for calibkit.

Each review joins a subject ("The soundtrack") to a hand-written positive or negative
predicate; a seeded shuffle picks 150 of each. Rerunning gives the same file.

    python datasets/sentiment/make.py
"""

import random
from pathlib import Path

from calibkit.datasets.cards import write_data_csv

SUBJECTS = [
    "The acting", "This film", "The soundtrack", "The plot", "The ending", "The dialogue",
    "The cinematography", "The lead performance", "The script", "The pacing", "The director's vision",
    "The supporting cast", "The special effects", "The story", "The final act", "The humour",
    "The editing", "The set design", "This sequel", "The opening scene",
]
POSITIVE = [
    "is a delight from start to finish", "had me smiling the whole time", "is smart, warm and generous",
    "feels fresh and confident", "is beautifully done", "kept me gripped until the credits",
    "is the best I have seen this year", "works wonderfully", "is funny and moving at once",
    "deserves every bit of praise", "is gorgeous to look at", "left me genuinely touched",
    "is sharp and surprising", "is a real triumph", "makes the two hours fly by",
]
NEGATIVE = [
    "is a chore to sit through", "made me check my watch again and again", "is lifeless and dull",
    "falls flat at every turn", "is a clumsy mess", "left me cold and bored",
    "is the worst I have seen this year", "never works", "is tedious and predictable",
    "wastes a talented cast", "is ugly and cheap-looking", "feels like a lazy cash grab",
    "is painfully slow", "is a total disappointment", "makes the two hours drag on forever",
]


def main() -> None:
    rng = random.Random(20261126)
    rows = []
    for label, preds in (("negative", NEGATIVE), ("positive", POSITIVE)):
        pairs = [(s, p) for s in SUBJECTS for p in preds]
        for s, p in rng.sample(pairs, 150):
            rows.append({"text": f"{s} {p}.", "label": label})
    rng.shuffle(rows)
    out = write_data_csv(Path(__file__).resolve().parent, rows, ["text", "label"])
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()

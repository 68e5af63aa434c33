"""Scored examples made up for the evaluation, comparison and report tests."""

from __future__ import annotations

from typing import Any

import numpy as np

import calibkit as ck


def overconfident(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three-class log-scores 2.5 times too sharp (the true temperature is 2.5), labels "a", "b", "c"."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 2.5
    p = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    return logits, np.array(["a", "b", "c"], dtype=object)[y]


def at_chance(n: int = 300, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A template at chance, or a little below (accuracy about 0.3 of 3 classes): confident scores that
    carry nothing of the labels, so temperature scaling flattens them to its bound, T = 100."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    return rng.normal(size=(n, k)) * 3 - 0.3 * np.eye(k)[y], y


def two_templates() -> tuple[Any, dict, np.ndarray]:
    """A comparison of two templates (one biased and informative, one weak), with the baseline
    "t2", conformal sets at alpha = 0.2; and its scores and labels."""
    from calibkit.comparison import compare

    rng = np.random.default_rng(7)
    n = 240
    y = np.array(["neg", "pos"])[rng.integers(0, 2, size=n)]
    onehot = np.stack([y == "neg", y == "pos"], axis=1).astype(float)
    scores = {
        ("t1", "v1", "m"): 1.2 * onehot + rng.normal(size=(n, 2)) + np.array([0.8, 0.0]),  # biased, informative
        ("t2", "v1", "m"): 0.4 * onehot + rng.normal(size=(n, 2)),
    }
    cals = {"temperature": ck.TemperatureScaling(), "batch": ck.BatchCalibration()}
    c = compare(scores, y, cals, classes=["neg", "pos"], factors=["template", "verbalizer", "model"],
                baseline="t2", n_boot=60, seed=3, metrics=["accuracy", "nll", "ece"], alpha=0.2, progress=False)
    return c, scores, y

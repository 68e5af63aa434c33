import numpy as np
import pytest

from calibkit.calibration._base import LOG_FLOOR, to_log_proba, to_shifted_log_scores


def _rows_equal_up_to_a_shift(a, b, atol):
    d = a.astype(np.float64) - b
    finite = np.isfinite(b)
    shift = np.where(finite, d, 0.0).max(axis=1, keepdims=True)
    np.testing.assert_allclose(np.where(finite, d - shift, 0.0), 0.0, atol=atol)


@pytest.mark.parametrize("seed", range(4))
def test_shifted_scores_are_the_log_probs_up_to_a_row_shift_with_the_same_floor(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20_000, 6)) * 8  # some entries fall below the floor
    X[rng.uniform(size=X.shape) < 0.1] = -np.inf
    X[:, 0] = np.where(np.isneginf(X).all(axis=1), 0.0, X[:, 0])
    X[5, :] = [0.0, LOG_FLOOR + 0.5, -np.inf, LOG_FLOOR + 1.0, -100.0, -3.0]  # the floor depends on the normaliser
    shifted = to_shifted_log_scores(X, "logprobs")
    assert shifted.dtype == np.float32 and np.all(shifted.max(axis=1) == 0)
    _rows_equal_up_to_a_shift(shifted, to_log_proba(X, "logprobs"), atol=1e-5)
    unfloored = to_shifted_log_scores(X, "logprobs", floor=False)
    assert np.array_equal(np.isneginf(unfloored), np.isneginf(X))
    probs = np.exp(to_log_proba(X, "logprobs", floor=False))
    _rows_equal_up_to_a_shift(to_shifted_log_scores(probs, "probs"), to_log_proba(probs, "probs"), atol=1e-5)


@pytest.mark.parametrize(
    ("X", "message"),
    [([[0.0, np.nan]], "NaN"), ([[0.0, np.inf]], r"\+inf"), ([[-np.inf, -np.inf]], "-inf for every class")],
)
def test_shifted_scores_refuse_what_the_log_probs_refuse(X, message):
    with pytest.raises(ValueError, match=message):
        to_shifted_log_scores(np.array(X), "logprobs")

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from calibkit import metrics
from smooth_reference import SMOOTH_CASES, previous_smooth_ece, smooth_case


def random_probs(n, k, seed=0, sharpness=3.0):
    """Shared random inputs: softmax of scaled normals, labels drawn from a tempered copy."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * sharpness
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    y = (z / 1.5 + rng.gumbel(size=(n, k))).argmax(axis=1)
    return y, p


CASES = [(2000, 3, 0), (5000, 5, 1), (3000, 10, 2), (700, 4, 3)]


# --- agreement with reference implementations (test dependencies only) ---------


@pytest.mark.parametrize(("n", "k", "seed"), CASES + [(1000, 2, 4)])
def test_brier_and_nll_agree_with_scikit_learn(n, k, seed):
    y, p = random_probs(n, k, seed)
    labels = np.arange(k)
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p, labels=labels), abs=1e-12)
    assert metrics.nll(y, p) == pytest.approx(log_loss(y, p, labels=labels), abs=1e-12)


def test_nll_clips_zeros_and_ones_like_scikit_learn():
    y = np.array([0, 1, 2, 0])
    p = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    assert metrics.nll(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1, 2]), abs=1e-12)
    assert metrics.nll(y[[1]], p[[1]]) == pytest.approx(-np.log(np.finfo(float).eps))
    assert metrics.nll(y, p, eps=0) == np.inf
    assert metrics.nll([0], [[1.0, 0.0]], eps=0) == 0.0


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_top_label_ece_agrees_with_netcal(n, k, seed):
    netcal = pytest.importorskip("netcal.metrics", reason="netcal (and torch) are optional test references")
    y, p = random_probs(n, k, seed)
    # netcal treats y with at most two distinct labels as a binary problem on
    # column 1, so the shared inputs are multiclass with every label present.
    assert len(np.unique(y)) == k > 2
    for bins in (10, 15):
        ref = netcal.ECE(bins=bins).measure(p, y)
        assert metrics.ece(y, p, bins=bins) == pytest.approx(ref, abs=1e-6)
        ref_mce = netcal.MCE(bins=bins).measure(p, y)
        assert metrics.mce(y, p, bins=bins) == pytest.approx(ref_mce, abs=1e-6)


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_smooth_ece_agrees_with_relplot(n, k, seed):
    relplot = pytest.importorskip("relplot")
    y, p = random_probs(n, k, seed)
    f, correct = relplot.multiclass_logits_to_confidences(p, y, probs=True)
    value, sigma = metrics.smooth_ece(y, p, return_sigma=True)
    assert value == pytest.approx(relplot.smECE(f, correct), abs=1e-6)
    _, ref_sigma = relplot.metrics.smECE(f, correct, return_width=True)
    assert sigma == pytest.approx(ref_sigma, abs=1e-12)
    assert metrics.smooth_ece(y, p, sigma=0.05) == pytest.approx(relplot.smECE_sigma(f, correct, 0.05), abs=1e-6)


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_debiased_ece_agrees_with_uncertainty_calibration(n, k, seed):
    cal = pytest.importorskip("calibration", reason="uncertainty-calibration is an optional test reference")
    y, p = random_probs(n, k, seed)
    for mode, reduction in (("top-label", "top-label"), ("marginal", "classwise")):
        ref = cal.lower_bound_scaling_ce(p, y, p=2, debias=True, num_bins=15, mode=mode)
        assert metrics.debiased_ece(y, p, reduction=reduction) == pytest.approx(ref, abs=1e-6)
    # their plug-in ECEs with equal-mass and equal-width bins
    assert metrics.ece(y, p, binning="mass") == pytest.approx(cal.get_ece_em(p, y, num_bins=15), abs=1e-6)
    assert metrics.ece(y, p) == pytest.approx(cal.get_ece(p, y, num_bins=15), abs=1e-6)


# --- definitions, by hand ------------------------------------------------------


def test_ece_norms_and_reductions_by_hand():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
    # top-label, 2 bins: confidences 0.8, 0.7, 0.6, 0.9 all in [0.5, 1]: acc 3/4, conf 0.75
    assert metrics.ece(y, p, bins=2) == pytest.approx(0.0)
    # 10 bins: one example per bin, gaps |1-.8|, |1-.7|, |0-.6|, |1-.9|
    gaps = np.array([0.2, 0.3, 0.6, 0.1])
    assert metrics.ece(y, p, bins=10) == pytest.approx(gaps.mean())
    assert metrics.ece(y, p, bins=10, norm="l2") == pytest.approx(np.sqrt(np.mean(gaps**2)))
    assert metrics.ece(y, p, bins=10, norm="max") == pytest.approx(0.6)
    # classwise, 2 bins: class 1 probs .2,.7,.4,.1 -> bin0 {.2,.4,.1}: conf .2333, freq 1/3; bin1 {.7}: 1
    c1 = 3 / 4 * abs(0.7 / 3 - 1 / 3) + 1 / 4 * abs(0.7 - 1)
    c0 = 1 / 4 * abs(0.3 - 0) + 3 / 4 * abs(2.3 / 3 - 2 / 3)
    assert metrics.ece(y, p, bins=2, reduction="classwise") == pytest.approx((c0 + c1) / 2)


def test_logprobs_input_is_renormalised():
    y, p = random_probs(500, 4, seed=5)
    logp = np.log(p) + np.log(0.002)  # unnormalised label mass
    for fn in (metrics.accuracy, metrics.nll, metrics.brier, metrics.ece, metrics.smooth_ece):
        assert fn(y, logp, input="logprobs") == pytest.approx(fn(y, p), abs=1e-12)


def test_unnormalised_probabilities_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="input='logprobs'"):
        metrics.ece([0, 1], [[0.001, 0.001], [0.0005, 0.0015]])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        metrics.nll([0, 1], [[1.5, -0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="column indices"):
        metrics.brier(["a", "b"], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="reduction"):
        metrics.ece([0], [[0.5, 0.5]], reduction="marginal")
    with pytest.raises(ValueError, match="binning"):
        metrics.ece([0], [[0.5, 0.5]], binning="quantile")


def test_labels_map_through_classes():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metrics.accuracy(["neg", "pos"], p, classes=["neg", "pos"]) == 1.0
    assert metrics.accuracy(["pos", "neg"], p, classes=["neg", "pos"]) == 0.0


def test_binary_probability_vectors_follow_scikit_learn():
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.1, 0.8, 0.6, 0.3])
    assert metrics.brier(y, p1) == pytest.approx(brier_score_loss(y, p1))
    assert metrics.nll(y, p1) == pytest.approx(log_loss(y, p1))


def test_probabilities_of_exactly_zero_and_one():
    y = np.array([0, 1, 2])
    p = np.eye(3)
    assert metrics.ece(y, p) == 0.0  # confidence 1.0 falls in the last (closed) bin
    assert metrics.brier(y, p) == 0.0
    assert metrics.nll(y, p) == pytest.approx(-np.log1p(-np.finfo(float).eps))
    assert metrics.ece([1, 2, 0], p) == pytest.approx(1.0)


def test_equal_mass_bins_never_split_ties():
    conf = np.array([0.6] * 50 + [0.9] * 50)
    p = np.stack([conf, 1 - conf], axis=1)
    y = np.array([0] * 30 + [1] * 20 + [0] * 45 + [1] * 5)
    # 15 equal-mass bins would cut both runs of ties; with ties kept together
    # there are two bins: |0.6 - 0.6| and |0.9 - 0.9| -> 0
    assert metrics.ece(y, p, bins=15, binning="mass") == pytest.approx(0.0, abs=1e-12)
    assert metrics.debiased_ece(y, p, bins=15) == pytest.approx(0.0, abs=1e-12)


def test_a_single_class_present():
    y = np.zeros(4, dtype=int)
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    assert metrics.accuracy(y, p) == 1.0
    assert metrics.ece(y, p, bins=10) == pytest.approx(0.25)
    d = metrics.brier_decomposition(y, p)
    assert d.uncertainty == 0.0 and d.resolution == 0.0
    assert d.brier == pytest.approx(metrics.brier(y, p))


def test_brier_decomposition_is_exact_for_binned_forecasts():
    rng = np.random.default_rng(6)
    levels = np.array([0.05, 0.35, 0.65, 0.95])  # forecasts constant within 15 equal-width bins
    p1 = levels[rng.integers(0, 4, size=2000)]
    y = (rng.uniform(size=2000) < np.sqrt(p1)).astype(int)
    p = np.stack([1 - p1, p1], axis=1)
    d = metrics.brier_decomposition(y, p)
    assert d.brier == pytest.approx(metrics.brier(y, p), abs=1e-12)
    assert d.within_bin == pytest.approx(0.0, abs=1e-12)
    assert d.reliability > 0 and d.resolution > 0
    assert d.uncertainty == pytest.approx(y.mean() * (1 - y.mean()))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    y, p = random_probs(400, 3, seed=7)
    a = metrics.bootstrap("ece", y, p, n_boot=200, seed=3)
    b = metrics.bootstrap(metrics.ece, y, p, n_boot=200, seed=3)
    assert (a.low, a.high) == (b.low, b.high)
    assert a.low < a.estimate < a.high
    assert a.estimate == metrics.ece(y, p)
    wider = metrics.bootstrap("ece", y, p, n_boot=200, seed=3, level=0.99)
    assert wider.low <= a.low and wider.high >= a.high
    c = metrics.bootstrap("ece", y, p, n_boot=200, seed=4)
    assert (c.low, c.high) != (a.low, a.high)


def test_paired_bootstrap_compares_on_the_same_examples():
    y, p = random_probs(500, 3, seed=8)
    same = metrics.paired_bootstrap("nll", y, p, p, n_boot=100)
    assert same.estimate == 0 and np.all(same.samples == 0)
    flat = np.full_like(p, 1 / 3)
    diff = metrics.paired_bootstrap("nll", y, p, flat, n_boot=300)
    assert diff.high < 0  # the model beats the uniform forecast, clearly
    with pytest.raises(ValueError, match="same examples"):
        metrics.paired_bootstrap("nll", y, p, p[:10])


def test_summary_lists_every_metric():
    y, p = random_probs(300, 3, seed=9)
    s = metrics.summary(y, np.log(p), input="logprobs")
    assert s["ece"] == pytest.approx(metrics.ece(y, p))
    assert set(s) == {"accuracy", "nll", "brier", "ece", "mce", "debiased_ece", "smooth_ece"}


# --- smooth ECE: the faster computation gives the values it gave before --------------------


@pytest.mark.parametrize(("n", "k", "seed", "temp"), SMOOTH_CASES)
def test_smooth_ece_values_are_unchanged(n, k, seed, temp):
    y, p = smooth_case(n, k, seed, temp)
    value, sigma = metrics.smooth_ece(y, p, return_sigma=True)
    ref_value, ref_sigma = previous_smooth_ece(y, p)
    assert sigma == ref_sigma and value == pytest.approx(ref_value, abs=1e-12)
    if n == 20000:
        assert sigma < 0.01


@pytest.mark.parametrize(
    ("n", "temp", "sigma"), [(150, 1.5, None), (600, 1.0, None), (200, 1.5, 0.05), (5000, 1.0, None)]
)
def test_smooth_ece_bootstrap_measures_resamples_together_with_the_same_values(n, temp, sigma):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(n, 3)) * 3
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    y = (z / temp + rng.gumbel(size=(n, 3))).argmax(axis=1)
    kw = {} if sigma is None else {"sigma": sigma}
    done = []
    together = metrics.bootstrap("smooth_ece", y, p, n_boot=40, seed=3, callback=done.append, **kw)
    # a wrapper is not recognised, so it is measured one resample at a time
    one_by_one = metrics.bootstrap(lambda y, p, **kw: metrics.smooth_ece(y, p, **kw), y, p, n_boot=40, seed=3, **kw)
    assert together.samples == pytest.approx(one_by_one.samples, abs=1e-12) and sum(done) == 40
    assert (together.estimate, together.low, together.high) == pytest.approx(
        (one_by_one.estimate, one_by_one.low, one_by_one.high), abs=1e-12)
    if sigma is None and n <= 600:  # and the values it gave before (slow, so the smaller cases only)
        idx = np.random.default_rng(3).integers(0, n, size=(40, n))
        ref = [previous_smooth_ece(y[i], p[i])[0] for i in idx]
        assert together.samples == pytest.approx(ref, abs=1e-12)


def test_bootstrap_callback_counts_every_resample():
    y, p = random_probs(100, 3, seed=10)
    done = []
    metrics.bootstrap("ece", y, p, n_boot=25, callback=done.append)
    assert done == [1] * 25
    with pytest.raises(ValueError, match="classes"):
        metrics.bootstrap("smooth_ece", ["x"] * 100, p, n_boot=5)


def _reference_top_label_ece(y, p, bins):
    """Plain float64 top-label ECE with equal-width bins: max and first arg-max per row, then bin sums."""
    p = np.asarray(p, dtype=np.float64)
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    idx = np.minimum((conf * bins).astype(np.intp), bins - 1)
    gap = np.abs(np.bincount(idx, hit, minlength=bins) - np.bincount(idx, conf, minlength=bins))
    return gap.sum() / len(y)


def _with_edge_cases(p, y, bins):
    """Rows whose confidence is exactly 1.0, exactly on a bin edge, or tied for the top."""
    p, y = p.copy(), y.copy()
    k = p.shape[1]
    p[:50] = 0.0
    p[:50, 0] = 1.0  # confidence 1.0: the last, closed bin
    edge = 3 / bins if bins != 10 else 0.2
    p[50:100] = (1 - edge) / (k - 1)
    p[50:100, 1] = edge  # exactly on an edge
    p[100:150] = 0.0
    p[100:150, [0, 1]] = 0.5  # a tie for the top: the first column wins
    y[100:125], y[125:150] = 0, 1  # right, then wrong, though both hold the top probability
    return p, y


@pytest.mark.parametrize(("n", "k", "bins", "seed"), [(5000, 10, 15, 0), (20_003, 8, 10, 1), (3000, 7, 5, 2)])
def test_blocked_ece_matches_a_float64_reference_in_float64_and_float32(n, k, bins, seed):
    y, p = random_probs(n, k, seed=seed)
    p, y = _with_edge_cases(p, y, bins)
    conf = p.max(axis=1)
    assert (conf == 1.0).sum() == 50 and np.isin(conf * bins, np.arange(bins)).sum() >= 50
    ref = _reference_top_label_ece(y, p, bins)
    assert metrics.ece(y, p, bins=bins) == pytest.approx(ref, abs=1e-12)
    p32 = p.astype(np.float32)
    # float32 confidences are exact in float64, so the same bins and the same sums
    assert metrics.ece(y, p32, bins=bins) == pytest.approx(_reference_top_label_ece(y, p32, bins), abs=1e-9)
    assert metrics.ece(y, p32, bins=bins) == pytest.approx(metrics.ece(y, p32.astype(np.float64), bins=bins), abs=1e-12)
    # equal-mass bins and the max norm go through the per-row confidences of the same pass
    conf, hit = p.max(axis=1)[:, None], (p.argmax(axis=1) == y).astype(float)[:, None]
    count, sum_conf, sum_hit, _ = metrics.binned_stats(conf, hit, bins, "mass")
    assert metrics.ece(y, p, bins=bins, binning="mass") == pytest.approx(np.abs(sum_hit - sum_conf).sum() / n, abs=1e-12)


def test_blocked_ece_still_names_bad_probabilities():
    y, p = random_probs(10_000, 3, seed=4)
    for bad, message in [(np.nan, "NaN"), (1.5, "outside"), (-0.1, "outside")]:
        q = p.copy()
        q[9_000, 1] = bad  # in a later block than the first
        with pytest.raises(ValueError, match=message):
            metrics.ece(y, q)
    q = p.copy()
    q[9_000] *= 1.01
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.ece(y, q)
    with pytest.raises(ValueError, match="column indices"):
        metrics.ece(np.full(10_000, 3), p)

"""calibkit.bins: equal-width and equal-mass bins, shared by the ECE family and histogram binning."""

import numpy as np
import pytest

from calibkit.bins import assign_bins, bin_index, check_binning, equal_mass_edges


def test_equal_width_bins_are_right_open_but_the_last() -> None:
    x = np.array([0.0, 0.1, 0.25, 0.999, 1.0])
    idx, n_bins, edges = bin_index(x, 4, "width")
    assert idx.tolist() == [0, 0, 1, 3, 3] and n_bins == 4 and edges.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert np.array_equal(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 3), idx)


def test_equal_mass_bins_hold_equal_counts_and_never_split_ties() -> None:
    x = np.random.default_rng(0).uniform(size=1000)
    idx, n_bins, edges = bin_index(x, 10, "mass")
    assert n_bins == 10 and np.bincount(idx).tolist() == [100] * 10
    assert np.array_equal(assign_bins(x, edges, "mass"), idx)
    ties = np.array([0.6] * 50 + [0.9] * 50)
    # 15 bins would cut both runs of ties; each run stays whole in a bin of its own
    edges = np.concatenate([[0.0], equal_mass_edges(ties, 15), [1.0]])
    assert np.bincount(assign_bins(ties, edges, "mass")).tolist() == [50, 50]
    assert equal_mass_edges(np.array([0.5]), 3).size == 0


@pytest.mark.parametrize(
    ("bins", "binning", "message"),
    [(10, "quantile", "binning='quantile'; use 'width'"), (0, "width", "bins=0"), (True, "mass", "bins=True"),
     (2.5, "width", "positive integer")],
)
def test_bad_settings_name_the_parameter(bins, binning, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_binning(bins, binning)

"""The power law of a scaling curve: known parameters are recovered, and a curve that cannot
determine them is said to be so rather than fitted silently."""

from __future__ import annotations

import numpy as np
import pytest

from greenfm.evaluate.scaling_fit import fit_power_law

SIZES = np.array([500, 1000, 2000, 4000, 8000, 16000, 32000])


def _law(n, a, b, c):
    return a - b * n ** (-c)


def test_known_parameters_are_recovered_with_cis_that_cover_them():
    rng = np.random.default_rng(0)
    a, b, c = 0.86, 3.0, 0.55
    y = _law(SIZES, a, b, c) + rng.normal(0, 5e-4, len(SIZES))
    resampled = _law(SIZES, a, b, c)[None, :] + rng.normal(0, 2e-3, (200, len(SIZES)))
    fit = fit_power_law(SIZES, y, resampled)
    assert fit.fitted and fit.identifiable, fit.reason
    assert fit.a == pytest.approx(a, abs=0.01)
    assert fit.c == pytest.approx(c, rel=0.1)
    assert fit.b == pytest.approx(b, rel=0.35)
    for value, ci in ((a, fit.a_ci), (b, fit.b_ci), (c, fit.c_ci)):
        assert ci[0] <= value <= ci[1]
    assert fit.n_resamples == 200 and fit.n_failed < 20
    assert np.allclose(fit.predict(SIZES), _law(SIZES, fit.a, fit.b, fit.c))


def test_noiseless_points_give_the_exact_law():
    fit = fit_power_law(SIZES[:4], _law(SIZES[:4], 0.9, 1.5, 0.4))
    assert fit.identifiable
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.9, 1.5, 0.4), rel=1e-3)


def test_a_flat_curve_is_not_identifiable():
    y = np.full(len(SIZES), 0.7) + np.random.default_rng(1).normal(0, 1e-3, len(SIZES))
    fit = fit_power_law(SIZES, y)
    assert fit.fitted and not fit.identifiable
    assert fit.reason and "not identifiable" in fit.describe()


def test_fewer_than_four_sizes_are_not_fitted():
    fit = fit_power_law(SIZES[:3], _law(SIZES[:3], 0.9, 1.5, 0.4))
    assert not fit.fitted and "at least 4 sizes" in fit.reason
    assert np.isnan(fit.predict([1000])).all()
    # a repeated size is one size
    fit = fit_power_law([500, 500, 1000, 2000], [0.6, 0.61, 0.7, 0.75])
    assert not fit.fitted and "has 3" in fit.reason

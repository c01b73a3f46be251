"""The saturating power law of a data-scaling curve, ``metric(n) = a - b * n^(-c)`` (METHODS 5.3, step 3).

``a`` is the metric the curve approaches with unlimited data, ``b`` how far below it the
curve starts, ``c`` how fast the gap closes. The fit is least squares
(``scipy.optimize.curve_fit``, trust-region reflective with ``c`` bounded to (0, 4]) on
``n`` scaled by the smallest size, from several starting exponents, keeping the best.

Three parameters need at least four sizes; with fewer the curve is not fitted. A fit is
called *not identifiable* when the data do not pin all three down: the covariance is
singular or not finite (a flat curve leaves ``c`` free), ``c`` runs to a bound, or the
standard error of ``b`` or ``c`` exceeds the value itself. The reason is stored and shown.

Confidence intervals refit the curve on each patient-bootstrap resample of the points
(the same test patients drawn for every size, so one resample is one whole curve) and take
the 2.5th and 97.5th percentiles of each parameter; resamples whose fit fails are counted.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_SIZES = 4
C_BOUNDS = (1e-3, 4.0)
_STARTS = (0.1, 0.3, 0.7, 1.5)


@dataclass
class PowerLawFit:
    """The fitted (a, b, c) with percentile CIs, or why there is none."""

    fitted: bool
    identifiable: bool
    reason: str | None
    n_sizes: int
    a: float | None = None
    b: float | None = None
    c: float | None = None
    a_ci: tuple[float, float] | None = None
    b_ci: tuple[float, float] | None = None
    c_ci: tuple[float, float] | None = None
    rmse: float | None = None
    n_resamples: int = 0
    n_failed: int = 0

    def predict(self, n: Any) -> np.ndarray:
        """The fitted curve at sizes ``n`` (NaN when nothing was fitted)."""
        n = np.asarray(n, dtype=float)
        if not self.fitted:
            return np.full(n.shape, np.nan)
        return self.a - self.b * n ** (-self.c)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("a_ci", "b_ci", "c_ci"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out

    def describe(self) -> str:
        """One line: the law with its CIs, or why it is not given."""
        if not self.fitted:
            return f"not fitted: {self.reason}"

        def ci(values):
            return f" [{values[0]:.3g}, {values[1]:.3g}]" if values else ""

        law = (f"a {self.a:.4g}{ci(self.a_ci)}, b {self.b:.4g}{ci(self.b_ci)}, c {self.c:.3g}{ci(self.c_ci)}"
               f" (rmse {self.rmse:.2g})")  # fmt: skip
        return law if self.identifiable else f"{law}; not identifiable: {self.reason}"


def fit_power_law(
    n: Any, y: Any, resampled: np.ndarray | None = None, *, max_resamples: int | None = None
) -> PowerLawFit:
    """Fit ``y = a - b * n^(-c)`` to the points (``n`` images, ``y`` metric); ``resampled`` is
    (R, K): the metric of every point on each of R shared patient resamples, for CIs."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(n) & np.isfinite(y) & (n > 0)
    sizes = int(len(np.unique(n[keep])))
    if sizes < MIN_SIZES:
        return PowerLawFit(False, False, f"needs at least {MIN_SIZES} sizes for 3 parameters, has {sizes}", sizes)
    solved = _solve(n[keep], y[keep])
    if solved is None:
        return PowerLawFit(False, False, "least squares did not converge", sizes)
    (a, b, c), cov, rmse = solved
    reason = _unidentifiable(np.array([a, b, c]), cov)
    fit = PowerLawFit(True, reason is None, reason, sizes, a, b, c, rmse=rmse)
    if resampled is not None and len(resampled):
        rows = np.asarray(resampled, dtype=float)[:, keep]
        rows = rows[: max_resamples] if max_resamples is not None else rows
        params, failed = [], 0
        for row in rows:
            ok = np.isfinite(row)
            enough = len(np.unique(n[keep][ok])) >= MIN_SIZES
            got = _solve(n[keep][ok], row[ok], start=(a, b, c)) if enough else None  # warm start: the point fit
            if got is None:
                failed += 1
            else:
                params.append(got[0])
        fit.n_resamples, fit.n_failed = len(rows), failed
        if params:
            values = np.asarray(params)
            low, high = np.percentile(values, [2.5, 97.5], axis=0)
            fit.a_ci, fit.b_ci, fit.c_ci = ((float(lo), float(hi)) for lo, hi in zip(low, high))
    return fit


def _solve(
    n: np.ndarray, y: np.ndarray, start: tuple[float, float, float] | None = None
) -> tuple[tuple[float, float, float], np.ndarray, float] | None:
    """Best least-squares (a, b, c) over several starts (or from ``start``), its covariance and the rmse."""
    from scipy.optimize import curve_fit

    n0 = float(n.min())
    x = n / n0  # scaled sizes: b is fitted as b * n0^(-c), which keeps the problem well conditioned

    def law(x, a, b_scaled, c):
        return a - b_scaled * x ** (-c)

    if start is not None:
        a_s, b_s, c_s = start
        starts = [(a_s, b_s * n0 ** (-c_s), min(max(c_s, C_BOUNDS[0] * 1.01), C_BOUNDS[1] * 0.99))]
    else:
        a0 = float(y.max()) + 1e-3
        starts = [(a0, a0 - float(y[np.argmin(x)]), c0) for c0 in _STARTS]
    best = None
    for a0, b0, c0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an infinite covariance is judged below, not warned about
                params, cov = curve_fit(law, x, y, p0=(a0, b0, c0), bounds=([-np.inf, -np.inf, C_BOUNDS[0]],
                                        [np.inf, np.inf, C_BOUNDS[1]]), method="trf", maxfev=20000)  # fmt: skip
        except (RuntimeError, ValueError):
            continue
        sse = float(((law(x, *params) - y) ** 2).sum())
        if best is None or sse < best[2] - 1e-15:
            best = (params, cov, sse)
    if best is None:
        return None
    (a, b_scaled, c), cov_scaled, sse = best
    # back to b in raw n: b = b_scaled * n0^c; the covariance follows by the delta method
    scale = n0**c
    jacobian = np.array([[1, 0, 0], [0, scale, b_scaled * scale * np.log(n0)], [0, 0, 1]])
    cov = jacobian @ cov_scaled @ jacobian.T if np.all(np.isfinite(cov_scaled)) else cov_scaled
    return (float(a), float(b_scaled * scale), float(c)), cov, float(np.sqrt(sse / len(y)))


def _unidentifiable(params: np.ndarray, cov: np.ndarray) -> str | None:
    """Why the data do not determine (a, b, c), or None when they do."""
    a, b, c = params
    if not np.all(np.isfinite(cov)):
        return "the covariance of (a, b, c) is not finite: the points do not determine all three (a flat curve leaves c free)"
    if min(abs(c - C_BOUNDS[0]), abs(c - C_BOUNDS[1])) < 1e-6 * max(1.0, abs(c)) + 1e-9:
        return f"the exponent c ran to its bound ({c:.3g})"
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    for name, value, error in (("b", b, se[1]), ("c", c, se[2])):
        if error > abs(value):
            return f"the standard error of {name} ({error:.2g}) exceeds {name} itself ({abs(value):.2g})"
    return None

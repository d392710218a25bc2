"""Statistics for comparing models on the same test examples: paired bootstrap, McNemar,
seed-aware intervals, Holm, power.

Why a *paired* bootstrap: two checkpoints scored on the same test set share the examples'
difficulty, so the uncertainty of their *difference* is much smaller than that of either score.
Resampling example indices jointly (one resample used for both models) keeps that pairing.
An example bootstrap alone holds the fine-tuned models fixed: it answers "are *these
checkpoints* different on this population of texts?", not "is this *recipe* better?".

Seed-aware intervals (:func:`seed_aware_interval`), for a quantity measured once per seed on one
shared test set: write the value of seed s as x_s = mu + e + u_s + eps_s, where e is the test-set
error shared by every seed (which examples happen to be in the test set), u_s the seed's effect
and eps_s the seed's own example noise (seeds err on different examples). The mean over S seeds
has variance Var(e) + (Var(u) + Var(eps)) / S. Two estimates, both from data at hand:

* V_seed = s^2(x_s) / S: the sample variance over seeds estimates Var(u) + Var(eps) exactly;
* V_ex = the mean *off-diagonal* covariance, across seeds, of the example-bootstrap replicates
  (one shared resample per replicate): seeds' own noises are independent, so only the shared
  part Var(e) survives. (Taking the bootstrap variance of the mean instead would count
  Var(eps)/S twice and over-cover badly when seeds disagree on many examples.)

se = sqrt(V_ex + V_seed). The seed variance rests on S - 1 degrees of freedom (1 or 2 for a
typical board), so a normal interval under-covers badly. Part of it is known precisely, though:
Var(eps), a seed's own example noise, is the bootstrap variance of one seed minus the shared
covariance (v_own). Only the excess s^2 - v_own is uncertain, and the interval is the
*generalized pivotal* one (Tsui and Weerahandi 1989) for that excess: with Z ~ N(0, 1) and
W ~ chi^2_{S-1} / (S - 1), the pivot Z * sqrt(V_ex + (v_own + max(0, s^2 - v_own) / W) / S) is
simulated with 20,000 fixed draws (results are reproducible) and the 1 - alpha quantile of its
absolute value is the half-width. It behaves like a t-interval on S - 1 df when seeds dominate
and like the normal one when the test set does. In the simulation of
tests/test_stats_honest.py it covers 92.5-98 % at 2, 3 and 5 seeds over five mixes of the
components, where a Welch-Satterthwaite t-interval covers 0.89 at 2 seeds (a small s^2 also
inflates its degrees of freedom) and a pivot on all of s^2 over-covers (0.99) when seeds
differ mainly in which examples they get wrong. One seed: V_ex is the plain bootstrap variance
and the interval (normal) is conditional on that fine-tune: it holds no seed noise.

Power: a two-sided test with half-width h rejects when |estimate| > h, so the smallest true
difference detected with probability ``power`` is h + z_power * se (:func:`minimum_detectable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special as _spc  # not scipy.stats: importing it costs ~1 s per command


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class McNemarResult:
    """Discordant pairs ``b`` (A right, B wrong) and ``c`` (A wrong, B right), the test statistic
    and its two-sided p-value. ``method`` is "exact" (binomial; statistic = min(b, c)) or
    "chi2-cc" (chi-square with continuity correction; statistic = (|b - c| - 1)^2 / (b + c))."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str = "exact"


# --------------------------------------------------------------------------- resampling core


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities (n_boot, n) of ``n_boot`` bootstrap resamples of n units (a multinomial draw
    made with ``bincount``), as float32 (exact for counts, and what :func:`weighted_sums` multiplies)."""
    out = np.empty((n_boot, n), dtype=np.float32)
    chunk = max(1, min(n_boot, (1 << 22) // max(n, 1)))  # ~4M multiplicities per chunk
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        itype = np.int32 if r * n < 2**31 else np.int64  # int32 draws are ~3x faster
        idx = rng.integers(0, n, size=(r, n), dtype=itype) + (np.arange(r, dtype=itype) * n)[:, None]
        out[start : start + r] = np.bincount(idx.ravel(), minlength=r * n).reshape(r, n)
    return out


def weighted_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Column sums (n_boot, D) of the rows of ``values`` (n, D) under each row of ``weights``
    (n_boot, n), as one float32 matrix product per chunk (BLAS; counts stay exact below 2^24, a
    confidence sum is good to ~1e-7 relative, far below any interval's width)."""
    n_boot, n = weights.shape
    out = np.empty((n_boot, values.shape[1]), dtype=np.float64)
    v = np.ascontiguousarray(values, dtype=np.float32 if n < 2**24 else np.float64)
    chunk = max(1, min(n_boot, (1 << 24) // max(n, 1)))  # ~16M multiplicities (64 MB) per chunk
    for start in range(0, n_boot, chunk):
        w = weights[start : start + chunk]
        out[start : start + chunk] = (w if w.dtype == v.dtype else w.astype(v.dtype)) @ v
    return out


def resampled_sums(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums (n_boot, D) of ``n_boot`` bootstrap resamples of the rows of ``values`` (n, D):
    per-unit sufficient statistics (a one-hot confusion cell per example, or per-sentence entity
    counts for NER), so a replicate is one multinomial weight vector times the matrix."""
    return weighted_sums(bootstrap_weights(values.shape[0], n_boot, rng), values)


def percentile_interval(estimate: float, replicates: np.ndarray, alpha: float = 0.05) -> Interval:
    """Percentile bootstrap CI: the alpha/2 and 1 - alpha/2 quantiles of the replicates."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return Interval(float(estimate), float(low), float(high))


# --------------------------------------------------------------------------- tests on pairs


def mcnemar(correct_a, correct_b) -> McNemarResult:
    """McNemar's test that A and B are equally accurate on the same examples.

    Only discordant examples carry information: b = A right and B wrong, c = A wrong and B
    right; under the null each discordant example is a fair coin. With b + c < 25 the p-value
    is the exact two-sided binomial one, min(1, 2 P(X <= min(b, c))) for X ~ Bin(b + c, 1/2)
    (the chi-square approximation is poor for few discordant pairs); otherwise the chi-square
    statistic with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c), on 1 df.
    No discordant pairs at all gives p = 1.

    >>> r = mcnemar([1] * 10 + [0] * 2, [0] * 10 + [1] * 2)
    >>> (r.b, r.c, round(r.p_value, 4), r.method)
    (10, 2, 0.0386, 'exact')
    """
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D and equally long, got {a.shape} and {b_.shape}")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact")
    if n < 25:
        p = min(1.0, 2.0 * float(_spc.bdtr(min(b, c), n, 0.5)))
        return McNemarResult(b, c, float(min(b, c)), p, "exact")
    stat = (abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(b, c, float(stat), float(_spc.chdtrc(1, stat)), "chi2-cc")


_PIVOT_DRAWS = 20_000


@lru_cache(maxsize=256)
def _pivot_draws(n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed draws (Z, W / (S - 1)) of the generalized pivot for ``n_seeds`` seeds."""
    rng = np.random.default_rng(20_241_130 + n_seeds)
    z = rng.standard_normal(_PIVOT_DRAWS)
    w = rng.chisquare(n_seeds - 1, _PIVOT_DRAWS) / (n_seeds - 1) if n_seeds >= 2 else np.ones(_PIVOT_DRAWS)
    return z, w


@dataclass(frozen=True)
class SeedAwareInterval:
    """A mean over seeds with its variance decomposition (see the module docstring).

    ``v_example``: shared test-set variance of the mean; ``v_seed``: seed variance of the mean,
    s^2 / S (0 with one seed: the interval is conditional on that fine-tune), of which ``v_own``
    is the seeds' own example noise; ``se``: sqrt(v_example + max(v_seed, v_own))."""

    estimate: float
    low: float
    high: float
    se: float
    v_example: float
    v_seed: float
    n_seeds: int
    alpha: float = 0.05
    v_own: float = 0.0  # the part of v_seed that is the seeds' own example noise (known from the bootstrap)

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def _scales(self) -> tuple[np.ndarray, np.ndarray]:
        return _pivot_scales(self.v_example, self.v_seed, self.v_own, self.n_seeds)

    def p_below(self, threshold: float = 0.0) -> float:
        """One-sided (generalized) p-value of H0: true value >= ``threshold``; small when the
        value is below it."""
        if not self.se > 0:
            return 0.0 if self.estimate < threshold else 1.0
        _, scale = self._scales()
        return float(_spc.ndtr((self.estimate - threshold) / scale).mean())

    def p_above(self, threshold: float = 0.0) -> float:
        """One-sided (generalized) p-value of H0: true value <= ``threshold``."""
        if not self.se > 0:
            return 0.0 if self.estimate > threshold else 1.0
        _, scale = self._scales()
        return float(_spc.ndtr((threshold - self.estimate) / scale).mean())

    def minimum_detectable(self, power: float = 0.8) -> float:
        """:func:`minimum_detectable` of this interval."""
        return minimum_detectable(self.half_width, self.se, power)


def _pivot_scales(v_example: float, v_seed: float, v_own: float, n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(Z, scale) draws of the generalized pivot: only the seed variance beyond the known own
    example noise is uncertain (scaled by 1 / W)."""
    z, w = _pivot_draws(n_seeds)
    own = max(v_own, 0.0)
    return z, np.sqrt(v_example + own + max(v_seed - own, 0.0) / w)


def _half_width(v_example: float, v_seed: float, n_seeds: int, alpha: float, v_own: float = 0.0) -> float:
    if n_seeds < 2 or v_seed <= v_own:  # the seeds vary no more than their own example noise explains
        return float(_spc.ndtri(1 - alpha / 2) * np.sqrt(v_example + max(v_seed, v_own, 0.0)))
    z, scale = _pivot_scales(v_example, v_seed, v_own, n_seeds)
    return float(np.quantile(np.abs(z) * scale, 1 - alpha))


def seed_aware_interval(points, replicates, alpha: float = 0.05) -> SeedAwareInterval:
    """Mean of ``points`` (S,) -- one value per seed -- with a seed- and example-aware interval.

    ``replicates`` (R, S): the same quantity per seed under R example-bootstrap resamples, one
    resample shared by all seeds per row. Rows with a non-finite value are dropped.

    >>> rng = np.random.default_rng(0)
    >>> shared = rng.normal(0, 0.01, size=(4000, 1))  # test-set noise common to both seeds
    >>> r = seed_aware_interval([0.10, 0.14], 0.12 + shared + rng.normal(0, 0.001, size=(4000, 2)))
    >>> round(r.estimate, 2), round(r.v_seed ** 0.5, 3), round(r.v_example ** 0.5, 3), round(r.half_width, 2)
    (0.12, 0.02, 0.01, 0.26)
    """
    x = np.asarray(points, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or reps.ndim != 2 or reps.shape[1] != x.size:
        raise ValueError(f"need points (S,) and replicates (R, S), got {x.shape} and {reps.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    reps = reps[np.isfinite(reps).all(axis=1)]
    s = x.size
    est = float(x.mean())
    if reps.shape[0] < 2 or not np.isfinite(est):
        nan = float("nan")
        return SeedAwareInterval(est, nan, nan, nan, nan, nan, s, alpha)
    if s == 1:
        v_ex, v_seed, v_own = float(reps[:, 0].var(ddof=1)), 0.0, 0.0
    else:
        cov = np.cov(reps, rowvar=False)
        shared = float((cov.sum() - np.trace(cov)) / (s * (s - 1)))  # mean covariance between two seeds
        v_ex = max(0.0, shared)
        v_seed = float(x.var(ddof=1) / s)
        v_own = max(0.0, float(np.trace(cov)) / s - shared) / s  # one seed's own example noise, over S
    half = _half_width(v_ex, v_seed, s, alpha, v_own)
    se = float(np.sqrt(v_ex + max(v_seed, v_own)))
    return SeedAwareInterval(est, est - half, est + half, se, v_ex, v_seed, s, alpha, v_own)


def minimum_detectable(half_width: float, se: float, power: float = 0.8) -> float:
    """Smallest true difference that a two-sided test rejecting when |estimate| > ``half_width``
    detects with probability ``power``, the estimate having standard error ``se``.

    >>> round(minimum_detectable(1.96 * 0.01, 0.01), 4)  # (1.96 + 0.84) * 0.01
    0.028
    """
    return float(half_width + _spc.ndtri(power) * se)


def seeds_needed(
    effect: float,
    v_example: float,
    seed_var: float,
    alpha: float = 0.05,
    power: float = 0.8,
    max_seeds: int = 200,
    own_var: float = 0.0,
) -> int | None:
    """Seeds per side for the minimum detectable difference to reach ``effect``, given the shared
    test-set variance ``v_example`` (it does not shrink with seeds) and the variance of one seed's
    value ``seed_var`` (= S * V_seed; ``own_var`` of it is the seed's own example noise, = S * v_own).
    None when the test set alone prevents it (even infinitely
    many seeds leave the MDE of V_ex alone above ``effect``) or it needs more than ``max_seeds``.

    >>> seeds_needed(0.05, 1e-4, 4e-4), seeds_needed(0.01, 1e-4, 4e-4)
    (4, None)
    """
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    z = float(_spc.ndtri(1 - alpha / 2))
    if minimum_detectable(z * np.sqrt(v_example), np.sqrt(v_example), power) >= effect:
        return None
    for s in range(2, max_seeds + 1):
        v_seed = seed_var / s
        half = _half_width(v_example, v_seed, s, alpha, own_var / s)
        if minimum_detectable(half, np.sqrt(v_example + max(v_seed, own_var / s)), power) <= effect:
            return s
    return None


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over every test given).

    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def t_interval(values, alpha: float = 0.05) -> Interval:
    """Mean of ``values`` (e.g. one score per seed) with a Student-t CI; NaN bounds for n < 2."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {x.shape}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = float(_spc.stdtrit(x.size - 1, 1 - alpha / 2) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(mean, mean - half, mean + half)


__all__ = [
    "Interval",
    "McNemarResult",
    "SeedAwareInterval",
    "bootstrap_weights",
    "holm",
    "mcnemar",
    "minimum_detectable",
    "percentile_interval",
    "resampled_sums",
    "seed_aware_interval",
    "seeds_needed",
    "t_interval",
    "weighted_sums",
]

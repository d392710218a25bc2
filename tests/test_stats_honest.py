"""The statistics tested as statistics: simulated coverage of the seed-aware interval with known
seed and example variance components, and a planted effect detected at about the power that
the minimum-detectable-difference formula predicts.

Simulation model (the one in :mod:`shiftbench.analysis.stats`): the per-unit difference of seed s on test
example i is z_si = delta + a_i + u_s + eps_si with a_i ~ N(0, sa^2) shared by the seeds (which
examples are in the test set), u_s ~ N(0, su^2) the seed's effect and eps_si ~ N(0, se^2) the
seed's own example noise; the metric is the mean over the n examples. The estimand is delta.
Each replicate draws a fresh test set and fresh seeds and runs the estimator exactly as
``compare`` does (example bootstrap with one resample shared by the seeds, then
:func:`seed_aware_interval`)."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbench.analysis.stats import _half_width, minimum_detectable, resampled_sums, seed_aware_interval

N, R, REPS = 200, 200, 600
# (sa, su, se): seed noise dominating (as on the committed board: lora vs standard has per-seed
# OOD differences spread by 0.035 against an example s.e. of ~0.006), and test-set noise dominating.
SEED_HEAVY = (0.2, 0.03, 0.0)
EXAMPLE_HEAVY = (0.3, 0.01, 0.3)
MIXED = (0.1, 0.02, 0.3)  # seeds differ mostly in which examples they get wrong


def simulate(n_seeds: int, sa: float, su: float, se: float, delta: float, seed: int, reps: int = REPS):
    """(covered, rejected, naive_covered) per replicate."""
    rng = np.random.default_rng(seed)
    covered, rejected, naive = np.zeros(reps, bool), np.zeros(reps, bool), np.zeros(reps, bool)
    for r in range(reps):
        z = (
            delta
            + rng.normal(0, sa, N)[:, None]
            + rng.normal(0, su, n_seeds)[None, :]
            + rng.normal(0, se, (N, n_seeds))
        )
        boot = resampled_sums(z, R, rng) / N
        ci = seed_aware_interval(z.mean(axis=0), boot)
        covered[r] = ci.low <= delta <= ci.high
        rejected[r] = ci.low > 0 or ci.high < 0
        lo, hi = np.quantile(boot.mean(axis=1), [0.025, 0.975])  # the old example-only interval
        naive[r] = lo <= delta <= hi
    return covered, rejected, naive


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
@pytest.mark.parametrize("components", [SEED_HEAVY, EXAMPLE_HEAVY, MIXED], ids=["seed-heavy", "example-heavy", "mixed"])
def test_coverage_of_the_seed_aware_interval(n_seeds, components):
    covered, _, naive = simulate(n_seeds, *components, delta=0.03, seed=n_seeds)
    assert 0.92 <= covered.mean() <= 0.98, f"coverage {covered.mean():.3f} at {n_seeds} seeds"
    if components == SEED_HEAVY:  # the example-only interval misses seed noise and under-covers
        assert naive.mean() < 0.85


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_planted_effect_is_found_at_the_predicted_power(n_seeds):
    sa, su, se = SEED_HEAVY
    v_ex, seed_var = sa**2 / N, su**2 + se**2 / N
    v_seed = seed_var / n_seeds
    mde = minimum_detectable(_half_width(v_ex, v_seed, n_seeds, 0.05, se**2 / N / n_seeds), np.sqrt(v_ex + v_seed), 0.8)
    _, rejected, _ = simulate(n_seeds, sa, su, se, delta=mde, seed=100 + n_seeds, reps=500)
    assert 0.7 <= rejected.mean() <= 0.9, f"power {rejected.mean():.3f} at the predicted MDE {mde:.4f}"
    _, null_rejected, _ = simulate(n_seeds, sa, su, se, delta=0.0, seed=200 + n_seeds, reps=500)
    assert null_rejected.mean() <= 0.08  # and no effect is found at about the nominal 5 %

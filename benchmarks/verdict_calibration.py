"""Are shiftbench's verdicts calibrated? The figures quoted for issue #14, from one command.

1. Simulated coverage of the seed-aware interval (the model and replicates of
   tests/test_stats_honest.py: known seed and example variance components, 600 replicates at
   2, 3 and 5 seeds per side), beside the old examples-only interval.
2. A planted effect of the size the MDE formula predicts, detected at about 80 % power.
3. Null comparisons on the committed predictions (results/): seed i vs seed j of one recipe
   (what the old examples-only ``compare`` called significant), and 2-seed nulls (A = seeds
   (i, j), B = seeds (j, k) relabelled) under the seed-aware interval and the gate's one-sided test.
4. The gate on B = A's recipe with its seeds permuted (a copy of results/ in a temp dir).

    PYTHONPATH=. python benchmarks/verdict_calibration.py      # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shiftbench.analysis.compare import compare  # noqa: E402
from shiftbench.analysis.stats import _half_width, minimum_detectable  # noqa: E402
from tests.test_stats_honest import EXAMPLE_HEAVY, MIXED, SEED_HEAVY, N, simulate  # noqa: E402
from tests.test_verdicts_committed import _copy_with, _reseed, null_counts  # noqa: E402

RESULTS = REPO / "results"


def coverage() -> None:
    print("1. simulated coverage of the 95 % interval (600 replicates)")
    for name, comp in (("seed-heavy", SEED_HEAVY), ("example-heavy", EXAMPLE_HEAVY), ("mixed", MIXED)):
        for s in (2, 3, 5):
            cov, _, naive = simulate(s, *comp, delta=0.03, seed=s)
            print(f"   {name:13s} {s} seeds/side: seed-aware {cov.mean():.3f}   examples-only {naive.mean():.3f}")
    print("2. planted effect at the predicted MDE (seed-heavy, 500 replicates)")
    sa, su, se = SEED_HEAVY
    for s in (3, 5):
        v_ex, seed_var = sa**2 / N, su**2 + se**2 / N
        mde = minimum_detectable(
            _half_width(v_ex, seed_var / s, s, 0.05, se**2 / N / s), np.sqrt(v_ex + seed_var / s), 0.8
        )
        _, hit, _ = simulate(s, sa, su, se, delta=mde, seed=100 + s, reps=500)
        _, null, _ = simulate(s, sa, su, se, delta=0.0, seed=200 + s, reps=500)
        print(
            f"   {s} seeds/side: MDE {mde:.4f}, power {hit.mean():.3f} (predicted 0.80), rejections at delta = 0: {null.mean():.3f}"
        )


def committed_nulls() -> None:
    print("3. null comparisons on the committed predictions (headline metric, OOD)")
    n = null_counts(RESULTS, 2000)
    print(f"   seed i vs seed j, examples-only interval (old compare): {n.old} of {n.old_n} significant")
    print(f"   2-seed nulls, seed-aware interval, two-sided 5 %: {n.two} of {n.two_n} significant")
    print(f"   2-seed nulls, the gate's one-sided 5 % test (before Holm), both directions: {n.gate} of {n.gate_n}")


def reseeded_gate() -> None:
    print("4. the gate on B = A's recipe with its seeds permuted (compare --fail-on-regression)")
    results = _copy_with(Path(tempfile.mkdtemp()) / "results")
    failing = runs = tested = 0
    recipes = [
        ("minilm-l6", "standard"),
        ("minilm-l6", "lora"),
        ("minilm-l6", "augment"),
        ("minilm-l6", "adversarial"),
        ("minilm-l6-l2", "standard"),
        ("minilm-l6-l2", "distill"),
        ("minilm-l6-l4", "standard"),
        ("minilm-l6-random", "standard"),
    ]
    for model, protocol in recipes:
        _reseed(results, model, protocol, f"{model}-reseeded")
        for a, b in (
            (f"{model}@{protocol}", f"{model}-reseeded@{protocol}"),
            (f"{model}-reseeded@{protocol}", f"{model}@{protocol}"),
        ):
            c = compare(results, a, b)
            runs, failing, tested = runs + 1, failing + bool(c.regressions), tested + sum(t.tested for t in c.targets)
    print(f"   {failing} of {runs} gate runs fail ({tested} (pair, target) tests, NER included)")
    c = compare(results, "minilm-l6", "minilm-l6-l2")
    print(f"   minilm-l6-l2 vs minilm-l6: regressions {c.regressions}")


if __name__ == "__main__":
    coverage()
    committed_nulls()
    reseeded_gate()

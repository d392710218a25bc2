"""The leaderboard's rank column: tiers of models the best is not significantly better than."""

from __future__ import annotations

import pandas as pd

from shiftbench.analysis.leaderboard import _ranks


def board(metric: str, means: list[float], halves: list[float]) -> pd.DataFrame:
    n = len(means)
    return pd.DataFrame(
        {
            "pair": ["p"] * n,
            "target": ["t"] * n,
            "metric": [metric] * n,
            "protocol": ["standard"] * n,
            "ood_score_mean": means,
            "ood_score_half": halves,
        }
    )


def test_ties_share_a_rank_and_the_next_tier_counts_the_models_above():
    # 0.80 vs 0.79: difference 0.01 < 1.645/1.96 * hypot(0.01, 0.01) = 0.0119 -> tie
    # 0.80 vs 0.77: 0.03 > 0.0119 -> worse; 0.77 leads the next tier with 0.765 (0.005 apart)
    ranks = _ranks(board("macro_f1", [0.77, 0.80, 0.60, 0.79, 0.765], [0.01] * 5))
    assert ranks.tolist() == [3, 1, 5, 1, 3]
    # wide intervals: nobody is significantly better than anybody
    assert _ranks(board("macro_f1", [0.77, 0.80, 0.60], [0.2] * 3)).tolist() == [1, 1, 1]


def test_lower_is_better_for_calibration_metrics():
    ranks = _ranks(board("ece", [0.02, 0.10, 0.021], [0.001] * 3))
    assert ranks.tolist() == [1, 3, 1]
    assert len(_ranks(board("ece", [], []))) == 0

"""Leaderboards, comparisons, effective robustness, estimates: numpy/pandas only, no torch."""

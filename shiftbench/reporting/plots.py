"""Deterministic PNG plots of a leaderboard (see :mod:`shiftbench.analysis.leaderboard`).

Both functions return the PNG bytes; nothing is written. The same board gives the same bytes
with the same matplotlib/FreeType build: the figure size and dpi are fixed, matplotlib's
default style is used whatever the user's ``matplotlibrc`` says, entries are drawn in sorted
order, and the PNG carries no ``Software`` or date metadata. ``pyplot`` is never imported, so
the global backend of an interactive session is left alone (the Agg canvas is used directly).

Points and bars are labelled ``model@protocol``; a colour belongs to one ``model@protocol``
of a pair, so the scatter and the gap bars of a pair agree.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shiftbench.core.errors import ShiftbenchError, did_you_mean

FIG_DPI = 100
SCATTER_SIZE = (7.5, 5.0)  # inches
BARS_SIZE = (8.5, 4.6)
_PALETTE = "tab10"


def _matplotlib():
    try:
        import matplotlib
    except ModuleNotFoundError:  # pragma: no cover - depends on the install
        raise ShiftbenchError("plots need matplotlib: pip install matplotlib") from None
    return matplotlib


def _rows(board: pd.DataFrame, metric: str, **where: str) -> pd.DataFrame:
    """Board rows of one metric (and pair / target), or a one-line error naming what exists."""
    rows = board[board["metric"] == metric]
    if rows.empty:
        raise ShiftbenchError(f"no leaderboard rows for metric {metric!r}{did_you_mean(metric, set(board['metric']))}")
    for col, value in where.items():
        have = set(rows[col])
        rows = rows[rows[col] == value]
        if rows.empty:
            raise ShiftbenchError(
                f"no leaderboard rows for {col} {value!r} (metric {metric!r}){did_you_mean(value, have)}"
            )
    return rows


def series_labels(rows: pd.DataFrame) -> pd.Series:
    """``model@protocol`` per row; when that is ambiguous (another checkpoint sha or protocol hash
    under the same names), the short hashes are appended so no two series share a label."""
    base = rows["model"].astype(str) + "@" + rows["protocol"].astype(str)
    extra = pd.Series("", index=rows.index)
    for col in ("model_sha256", "protocol_hash"):
        if col not in rows:
            continue
        ambiguous = rows.groupby(base)[col].transform("nunique") > 1
        extra = extra.where(~ambiguous, extra + " " + col.split("_")[0] + ":" + rows[col].astype(str).str[:8])
    return base + extra


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("model", "protocol", "model_sha256", "protocol_hash", "target") if c in rows]
    return rows.sort_values(keys, kind="mergesort")


def _colours(labels: Iterable[str]) -> dict[str, Any]:
    mpl = _matplotlib()
    labels = sorted(set(labels))
    cmap = mpl.colormaps[_PALETTE if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _board_series(board: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.Series, dict[str, Any]]:
    """The board with one index label per row, the series label of each of its rows of ``metric``
    (indexed like it) and one colour per label, both over the whole board: a model@protocol
    keeps its label and colour in every plot of the report, whichever pair it is drawn for."""
    board = board.reset_index(drop=True)
    labels = series_labels(_rows(board, metric))
    return board, labels, _colours(labels)


def _err(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray | None:
    """Asymmetric error bars from CI bounds; None when no row has a CI (one seed)."""
    lo, hi = mean - low, high - mean
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    return np.vstack([np.where(ok, np.maximum(lo, 0), 0.0), np.where(ok, np.maximum(hi, 0), 0.0)])


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    return (
        pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float) if name in rows else np.full(len(rows), np.nan)
    )


def _new_figure(size: tuple[float, float], layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=FIG_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, metadata={"Software": None})
    return buf.getvalue()


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults, whatever the local matplotlibrc, plus a few fixed tweaks; the
    caller's rcParams are restored afterwards."""
    mpl = _matplotlib()
    with mpl.rc_context():
        import matplotlib.style

        matplotlib.style.use("default")
        mpl.rcParams.update({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8})
        yield


def _fits(fit: Any) -> list[Any]:
    if fit is None:
        return []
    fits = list(fit) if isinstance(fit, (list, tuple)) else [fit]
    ok = [f for f in fits if math.isfinite(float(f.slope)) and math.isfinite(float(f.intercept))]
    return sorted(
        ok,
        key=lambda f: (
            -int(getattr(f, "n_models", 0)),
            str(getattr(f, "family", "")),
            tuple(getattr(f, "protocol_hash_set", ())),
        ),
    )


def id_ood_scatter(board: pd.DataFrame, pair: str, target: str, metric: str, fit: Any = None) -> bytes:
    """PNG: one point per model@protocol at (ID mean, OOD mean) with 95 % CI whiskers on both
    axes where there are several seeds, the dashed y = x line (no gap) and, when ``fit`` is
    given (a ``RobustnessFit`` or a sequence of them: one per protocol family), each
    effective-robustness baseline ``OOD = sigmoid(slope * logit(ID) + intercept)``, labelled
    with its family.
    """
    from scipy.special import expit, logit

    board, board_labels, colours = _board_series(board, metric)
    rows = _sorted(_rows(board, metric, pair=pair, target=target))
    labels = board_labels.loc[rows.index]
    x, y = _col(rows, "id_score_mean"), _col(rows, "ood_score_mean")
    xerr = _err(x, _col(rows, "id_score_ci_low"), _col(rows, "id_score_ci_high"))
    yerr = _err(y, _col(rows, "ood_score_ci_low"), _col(rows, "ood_score_ci_high"))

    with _style():
        fig = _new_figure(SCATTER_SIZE, layout=None)
        # A square plot area at a fixed place (y = x is its diagonal), the legend to its right.
        w, h = SCATTER_SIZE
        side = 0.8 * h
        ax = fig.add_axes((0.7 / w, 0.6 / h, side / w, side / h))
        # Axis range: every point and whisker, padded; both axes share it so y = x is the diagonal.
        ends = [v for v in (x, y) if v.size]
        for err, v in ((xerr, x), (yerr, y)):
            if err is not None:
                ends += [v - err[0], v + err[1]]
        values = np.concatenate(ends) if ends else np.array([])
        values = values[np.isfinite(values)]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        pad = max(0.05 * (hi - lo), 0.02)
        lo, hi = lo - pad, hi + pad
        if lo >= -pad and hi <= 1 + pad:  # a [0, 1] metric: keep the axes inside it
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.45", linewidth=1, label="y = x (no gap)", zorder=1)
        for i, lab in enumerate(labels):
            ax.errorbar(
                x[i],
                y[i],
                xerr=None if xerr is None else xerr[:, i : i + 1],
                yerr=None if yerr is None else yerr[:, i : i + 1],
                fmt="o",
                markersize=6,
                capsize=3,
                elinewidth=1,
                color=colours[lab],
                label=lab,
                zorder=3,
            )
        fits = _fits(fit)
        # one line per protocol family: with more than one, each label names its family (and stays short
        # enough for the legend); with one, the label it always had
        several = len({getattr(f, "family", None) for f in fits}) > 1
        for k, f in enumerate(fits):
            grid = np.linspace(max(lo, 1e-4), min(hi, 1 - 1e-4), 200)
            if grid[0] >= grid[-1]:
                continue
            curve = expit(float(f.slope) * logit(grid) + float(f.intercept))
            n, on, family = getattr(f, "n_models", None), tuple(getattr(f, "fitted_on", ())), getattr(f, "family", None)
            if several:
                name = f"{family} line ({n} {'fine-tunes' if on == (family,) else 'points'})"
            elif n is not None and len(on) == 1:
                name = f"trend of {n} {on[0]} fine-tunes"
            else:
                name = "effective-robustness fit" + (f" ({n} models)" if n is not None else "")
            ax.plot(grid, curve, linestyle=("-", "-.", ":")[k % 3], color="black", linewidth=1.2, label=name, zorder=2)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.set_xlabel(f"ID {metric} (source test)")
        ax.set_ylabel(f"OOD {metric} ({target} test)")
        ax.set_title(f"{pair}: ID vs OOD on {target}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0)
        return _png(fig)


def gap_bars(board: pd.DataFrame, pair: str, metric: str) -> bytes:
    """PNG: one group of bars per target, one bar per model@protocol, height the mean gap
    (ID - OOD) with its 95 % CI whisker where there are several seeds."""
    board, board_labels, colours = _board_series(board, metric)
    rows = _sorted(_rows(board, metric, pair=pair))
    labels = board_labels.loc[rows.index]
    series = list(dict.fromkeys(labels))  # model, protocol order, as in the scatter's legend
    targets = sorted(set(rows["target"]))
    width = 0.8 / max(len(series), 1)

    with _style():
        fig = _new_figure(BARS_SIZE)
        ax = fig.add_subplot()
        ax.axhline(0.0, color="0.3", linewidth=0.8, zorder=1)
        for j, lab in enumerate(series):
            mine = rows[labels == lab]
            pos, mean, low, high = [], [], [], []
            for t_i, target in enumerate(targets):
                hit = mine[mine["target"] == target]
                if hit.empty:
                    continue
                r = hit.iloc[0]
                pos.append(t_i - 0.4 + width * (j + 0.5))
                mean.append(float(r["gap_mean"]))
                low.append(float(r.get("gap_ci_low", np.nan)))
                high.append(float(r.get("gap_ci_high", np.nan)))
            if not pos:
                continue
            mean_a = np.array(mean)
            err = _err(mean_a, np.array(low), np.array(high))
            ax.bar(
                pos,
                mean_a,
                width=width * 0.92,
                color=colours[lab],
                label=lab,
                zorder=2,
                yerr=err,
                capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "black"},
            )
        ax.set_xticks(range(len(targets)), targets)
        ax.set_xlim(-0.6, len(targets) - 0.4)
        ax.set_ylabel(f"gap in {metric} (ID - OOD)")
        ax.set_title(f"{pair}: generalization gap per target (95 % CI)")
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
        fig.legend(loc="outside right upper")
        return _png(fig)


__all__: Sequence[str] = ("id_ood_scatter", "gap_bars", "series_labels")

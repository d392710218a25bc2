"""Is model B really better (or worse) than model A out of domain? A paired comparison.

Leaderboard means hide how noisy a test set is. ``compare`` reloads the per-example
predictions of both models and, for every (pair, target) both were scored on, bootstraps the
difference B - A of the ID score, the OOD score and the gap, resampling test *examples* (the
same resample for both models and every shared seed, so the pairing is kept). ID and OOD
examples are resampled independently within each replicate, which is what the gap
difference (idB - oodB) - (idA - oodA) needs.

The OOD verdict comes from the bootstrap CI: "better" if it lies above 0, "worse" if below,
else "no significant difference". McNemar's test on OOD accuracy is shown alongside; it pools
(seed, example) pairs and so treats seeds as independent draws, which makes its p-value
optimistic with several seeds -- the CI is the primary evidence.

Both models must have been scored on identical examples: equal source and target data
fingerprints and equal label arrays, else a one-line :class:`ShiftbenchError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from shiftbench.errors import ShiftbenchError, did_you_mean
from shiftbench.results import LoadedRuns, predictions_path, read_runs
from shiftbench.ner_metrics import NER_SUM_METRICS, entity_types, ner_sum_metric, sentence_stats
from shiftbench.stats import (
    COUNT_METRICS, Interval, McNemarResult, SumMetric, bootstrap_differences, bootstrap_sum_differences, mcnemar,
    percentile_interval,
)  # fmt: skip

DEFAULT_PROTOCOL = "standard"
_RUN_COLUMNS = ["run_id", "model", "model_sha256", "pair", "source", "target", "seed", "protocol",
                "protocol_hash", "metric", "source_fingerprint", "target_fingerprint", "label_space", "created_at"]  # fmt: skip


@dataclass(frozen=True)
class ModelRef:
    """``model@protocol`` as given on the command line; the protocol defaults to "standard"."""

    model: str
    protocol: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        model, sep, protocol = str(text).rpartition("@")
        if not sep:
            model, protocol = protocol, DEFAULT_PROTOCOL
        if not model or not protocol:
            raise ShiftbenchError(f"model {text!r}: expected 'model' or 'model@protocol'")
        return cls(model, protocol)

    def __str__(self) -> str:
        return f"{self.model}@{self.protocol}"


@dataclass(frozen=True)
class RunPredictions:
    """Per-example labels and predictions of one run, ordered by example index."""

    run_id: str
    id_labels: np.ndarray
    id_preds: np.ndarray
    ood_labels: np.ndarray
    ood_preds: np.ndarray
    # Token classification: rows are words; words per sentence (the bootstrap resamples sentences).
    id_lengths: np.ndarray | None = None
    ood_lengths: np.ndarray | None = None

    @property
    def is_tokens(self) -> bool:
        return self.id_lengths is not None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(labels, preds, lengths) of "id" or "ood"."""
        return getattr(self, f"{name}_labels"), getattr(self, f"{name}_preds"), getattr(self, f"{name}_lengths")


def load_predictions(results_dir: Path, run_id: str) -> RunPredictions:
    path = predictions_path(results_dir, run_id)
    try:
        names = pq.read_schema(path).names
        cols = ["split", "index", "label", "pred"] + (["position"] if "position" in names else [])  # v1 files have none
        table = pq.read_table(path, columns=cols).to_pandas()
    except FileNotFoundError:
        raise ShiftbenchError(f"{path}: predictions of run {run_id} are missing") from None
    except Exception as exc:  # unreadable or foreign file: one line naming it
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShiftbenchError(f"{path}: unreadable predictions of run {run_id} ({why})") from None
    n_labels = _n_labels(results_dir, run_id)
    out, lengths = {}, {}
    tokens = "position" in table.columns and table["position"].notna().any()
    for split in ("id_test", "ood_test"):
        part = table[table["split"] == split].sort_values(["index", "position"] if tokens else "index")
        if part.empty:
            raise ShiftbenchError(f"{path}: no {split} predictions")
        out[split] = (part["label"].to_numpy(np.int64), part["pred"].to_numpy(np.int64))
        if min(a.min() for a in out[split]) < 0:
            raise ShiftbenchError(f"{path}: negative class ids in the {split} labels or predictions")
        # Counts are sized by the largest id (k x k confusion per resample): an id past the
        # run's label space asked for 27 GiB.
        top = max(int(a.max()) for a in out[split])
        if top >= n_labels:
            raise ShiftbenchError(f"{path}: class id {top} in the {split} labels or predictions is outside the run's {n_labels} labels")
        lengths[split] = part.groupby("index", sort=True).size().to_numpy(np.int64) if tokens else None
    return RunPredictions(run_id, *out["id_test"], *out["ood_test"], lengths["id_test"], lengths["ood_test"])


def _n_labels(results_dir: Path, run_id: str) -> int:
    """Size of a run's label space, from its run file (what its class ids index)."""
    from shiftbench.results import run_path

    path = run_path(results_dir, run_id)
    try:
        column = pq.read_table(path, columns=["label_space"]).column(0)
        return len(column[0].as_py())
    except Exception as exc:  # missing, unreadable or foreign: the predictions cannot be checked
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShiftbenchError(f"{path}: cannot read the label space of run {run_id} ({why[:200]})") from None


def split_stats(p: RunPredictions, split: str, tags: Sequence[str]) -> np.ndarray:
    """Token classification: per-sentence statistics of one split ("id" or "ood")."""
    return sentence_stats(*p.split(split), tags)


def sum_metric(metric: str, tags: Sequence[str]) -> SumMetric:
    """Token classification: ``metric`` on summed :func:`split_stats` of a run with label space ``tags``."""
    return ner_sum_metric(metric, len(entity_types(tags)))


BOOTSTRAP_METRICS = tuple(dict.fromkeys([*COUNT_METRICS, *NER_SUM_METRICS]))


def check_metric(metric: str, token_task: bool | None = None) -> None:
    """``metric`` can be recomputed from stored predictions (for the task, when given)."""
    allowed = BOOTSTRAP_METRICS if token_task is None else NER_SUM_METRICS if token_task else tuple(COUNT_METRICS)
    if metric not in allowed:
        kind = "" if token_task is None else " for token classification" if token_task else " for text classification"
        raise ShiftbenchError(f"metric {metric!r} cannot be bootstrapped from predictions{kind}{did_you_mean(metric, allowed)}")


def load_run_frame(
    results_dir: Path, metric: str, loaded: LoadedRuns | None = None
) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """One row per run (its ``metric`` row), deduplicated by run id (``loaded``: the run files
    already read, with at least these columns)."""
    loaded = read_runs(results_dir, columns=_RUN_COLUMNS) if loaded is None else loaded  # read only what is used
    frame = loaded.table.select(_RUN_COLUMNS).to_pandas()
    frame = frame[frame["metric"] == metric].drop_duplicates("run_id").reset_index(drop=True)
    return frame, loaded.skipped


@dataclass(frozen=True)
class TargetComparison:
    """B - A on one (pair, target); scores are means over the shared seeds."""

    pair: str
    source: str
    target: str
    seeds: tuple[int, ...]
    n_id: int
    n_ood: int
    id_a: float
    id_b: float
    ood_a: float
    ood_b: float
    id_diff: Interval
    ood_diff: Interval
    gap_diff: Interval  # (idB - oodB) - (idA - oodA); negative = B loses less out of domain
    mcnemar_ood: McNemarResult  # on OOD accuracy, (seed, example) pairs pooled
    verdict: str  # for OOD: "better", "worse" or "no significant difference"


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    metric: str
    n_boot: int
    seed: int
    alpha: float
    targets: tuple[TargetComparison, ...]
    skipped_files: tuple[tuple[Path, str], ...] = ()

    @property
    def regressions(self) -> list[tuple[str, str]]:
        """(pair, target) where B is significantly worse than A out of domain."""
        return [(t.pair, t.target) for t in self.targets if t.verdict == "worse"]

    def to_text(self) -> str:
        level = f"{1 - self.alpha:.0%}"
        lines = [
            f"B = {self.b} vs A = {self.a}, metric {self.metric}; differences are B - A with {level} "
            f"paired-bootstrap CIs ({self.n_boot} resamples of test examples, seed {self.seed})",
        ]
        header = ["target", "seeds", "n_id", "n_ood", "A ID", "B ID", "A OOD", "B OOD", f"B-A ID [{level} CI]",
                  f"B-A OOD [{level} CI]", f"B-A gap [{level} CI]", "McNemar (OOD accuracy)", "OOD verdict"]  # fmt: skip
        for pair in dict.fromkeys(t.pair for t in self.targets):
            rows = [t for t in self.targets if t.pair == pair]
            lines += ["", f"{pair} (source {rows[0].source})"]
            body = [[t.target, ",".join(map(str, t.seeds)), str(t.n_id), str(t.n_ood), f"{t.id_a:.4f}", f"{t.id_b:.4f}",
                     f"{t.ood_a:.4f}", f"{t.ood_b:.4f}", str(t.id_diff), str(t.ood_diff), str(t.gap_diff),
                     _mcnemar_text(t.mcnemar_ood, len(t.seeds)), t.verdict] for t in rows]  # fmt: skip
            lines += ["  " + line for line in _table(header, body)]
        worse = ", ".join(f"{p}/{t}" for p, t in self.regressions) or "none"
        lines += ["", f"regressions (B significantly worse OOD): {worse}"]
        if self.skipped_files:
            lines.append(f"({len(self.skipped_files)} unreadable run file(s) skipped)")
        return "\n".join(lines)


def _mcnemar_text(r: McNemarResult, n_seeds: int) -> str:
    p = f"{r.p_value:.4f}" if r.p_value >= 1e-4 else f"{r.p_value:.1e}"
    return f"p={p} b={r.b} c={r.c} {r.method}, {n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 1}
    fmt = lambda r: "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header).rstrip(), "-" * sum(widths + [2 * (len(widths) - 1)]), *(fmt(r).rstrip() for r in rows)]


def _select(frame: pd.DataFrame, ref: ModelRef, available: list[str], results_dir: Path) -> pd.DataFrame:
    rows = frame[(frame["model"] == ref.model) & (frame["protocol"] == ref.protocol)]
    if rows.empty:
        same_model = [r for r in available if r.rpartition("@")[0] == ref.model]  # other protocols
        hint = " (did you mean " + " or ".join(map(repr, same_model)) + "?)" if same_model else did_you_mean(str(ref), available)
        raise ShiftbenchError(f"no runs of {ref} in {results_dir}{hint}")
    return rows


def _one_version(rows: pd.DataFrame, ref: ModelRef, pair: str, target: str) -> None:
    """Runs of different model weights, protocol versions or data are never pooled."""
    for col, what in (("model_sha256", "model weights"), ("protocol_hash", "protocol versions"),
                      ("source_fingerprint", "source data"), ("target_fingerprint", "target data")):  # fmt: skip
        values = sorted(rows[col].unique())
        if len(values) > 1:
            raise ShiftbenchError(
                f"{pair}/{target}: {ref} has runs from {len(values)} different {what} ({col} {', '.join(values)}); "
                "move the outdated run files out of the results dir"
            )
    dup = rows[rows["seed"].duplicated(keep=False)]
    if not dup.empty:
        raise ShiftbenchError(
            f"{pair}/{target}: {ref} has {len(dup)} runs for seed {int(dup['seed'].iloc[0])} "
            f"(run ids {', '.join(sorted(dup['run_id']))}), e.g. a fine-tuned and an --eval-only run; keep one"
        )


def _compare_target(results_dir: Path, ra: pd.DataFrame, rb: pd.DataFrame, a: ModelRef, b: ModelRef,
                    metric: str, n_boot: int, seed: int, alpha: float) -> TargetComparison:  # fmt: skip
    pair, target = ra["pair"].iloc[0], ra["target"].iloc[0]
    for rows, ref in ((ra, a), (rb, b)):
        _one_version(rows, ref, pair, target)
    seeds = sorted(set(ra["seed"]) & set(rb["seed"]))
    if not seeds:
        raise ShiftbenchError(
            f"{pair}/{target}: no seed in common ({a}: seeds {sorted(ra['seed'].tolist())}; {b}: seeds {sorted(rb['seed'].tolist())})"
        )
    for col, what in (("source_fingerprint", "source"), ("target_fingerprint", "target")):
        fa, fb = ra[col].iloc[0], rb[col].iloc[0]
        if fa != fb:
            raise ShiftbenchError(
                f"{pair}/{target}: {a} and {b} were scored on different {what} data "
                f"({what} fingerprint {fa} vs {fb}); predictions are not paired"
            )
    by_seed = {ref: rows.set_index("seed") for ref, rows in ((a, ra), (b, rb))}
    preds = {ref: [load_predictions(results_dir, by_seed[ref].loc[s, "run_id"]) for s in seeds] for ref in (a, b)}
    first = preds[a][0]
    for p in preds[a] + preds[b]:
        for split in ("id", "ood"):
            if not np.array_equal(getattr(p, f"{split}_labels"), getattr(first, f"{split}_labels")):
                raise ShiftbenchError(
                    f"{pair}/{target}: run {p.run_id} has different {split.upper()} test labels than run {first.run_id}; "
                    "predictions are not paired"
                )
    tags = tuple(ra["label_space"].iloc[0])
    check_metric(metric, first.is_tokens)
    ss_id, ss_ood = np.random.SeedSequence(seed).spawn(2)  # independent ID and OOD resamples
    draws = {}
    for split, ss in (("id", ss_id), ("ood", ss_ood)):
        if first.is_tokens:  # resample sentences, score entities
            stats = {ref: [split_stats(p, split, tags) for p in preds[ref]] for ref in (a, b)}
            draws[split] = bootstrap_sum_differences(sum_metric(metric, tags), stats[a], stats[b], n_boot, np.random.default_rng(ss))
            continue
        k = max(len(tags), 1 + max(
            int(max(x.max() for x in (p.id_labels, p.id_preds, p.ood_labels, p.ood_preds))) for p in preds[a] + preds[b]))  # fmt: skip
        draws[split] = bootstrap_differences(
            metric, getattr(first, f"{split}_labels"),
            [getattr(p, f"{split}_preds") for p in preds[a]], [getattr(p, f"{split}_preds") for p in preds[b]],
            n_boot, np.random.default_rng(ss), num_labels=k,
        )  # fmt: skip
    d_id, d_ood = draws["id"], draws["ood"]
    ood_ci = percentile_interval(d_ood.estimate, d_ood.replicates, alpha)
    verdict = "better" if ood_ci.low > 0 else "worse" if ood_ci.high < 0 else "no significant difference"
    correct = {ref: np.concatenate([p.ood_preds == p.ood_labels for p in preds[ref]]) for ref in (a, b)}
    return TargetComparison(
        pair=pair, source=ra["source"].iloc[0], target=target, seeds=tuple(int(s) for s in seeds),
        n_id=len(first.id_lengths) if first.is_tokens else len(first.id_labels),
        n_ood=len(first.ood_lengths) if first.is_tokens else len(first.ood_labels),
        id_a=d_id.estimate_a, id_b=d_id.estimate_b, ood_a=d_ood.estimate_a, ood_b=d_ood.estimate_b,
        id_diff=percentile_interval(d_id.estimate, d_id.replicates, alpha), ood_diff=ood_ci,
        gap_diff=percentile_interval(d_id.estimate - d_ood.estimate, d_id.replicates - d_ood.replicates, alpha),
        mcnemar_ood=mcnemar(correct[a], correct[b]), verdict=verdict,
    )  # fmt: skip


def compare(
    results_dir: Path,
    a: str,
    b: str,
    pairs: Sequence[str] | None = None,
    metric: str = "macro_f1",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Comparison:
    """Compare B against A on every (pair, target) both have, over the seeds both have.

    ``a``/``b``: "model" or "model@protocol" (protocol defaults to "standard"). ``metric``:
    "accuracy" or "macro_f1" (recomputed from the stored predictions).
    """
    check_metric(metric)
    if n_boot < 1:
        raise ShiftbenchError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ShiftbenchError(f"alpha must lie in (0, 1), got {alpha}")
    results_dir = Path(results_dir)
    ref_a, ref_b = ModelRef.parse(a), ModelRef.parse(b)
    frame, skipped = load_run_frame(results_dir, metric)
    available = sorted(set(frame["model"] + "@" + frame["protocol"]))
    rows_a, rows_b = (_select(frame, r, available, results_dir) for r in (ref_a, ref_b))
    keys_a = set(zip(rows_a["pair"], rows_a["target"]))
    common = sorted(keys_a & set(zip(rows_b["pair"], rows_b["target"])))
    if not common:
        raise ShiftbenchError(
            f"{ref_a} and {ref_b} have no pair/target in common in {results_dir} "
            f"({ref_a}: {', '.join(sorted(set(rows_a['pair'])))}; {ref_b}: {', '.join(sorted(set(rows_b['pair'])))})"
        )
    if pairs:  # None or empty: every pair both have
        shared = sorted({p for p, _ in common})
        for p in pairs:
            if p not in shared:
                raise ShiftbenchError(f"pair {p!r} has no results for both {ref_a} and {ref_b}{did_you_mean(p, shared)}")
        common = [(p, t) for p, t in common if p in set(pairs)]
    targets = []
    for pair, target in common:
        ra = rows_a[(rows_a["pair"] == pair) & (rows_a["target"] == target)]
        rb = rows_b[(rows_b["pair"] == pair) & (rows_b["target"] == target)]
        targets.append(_compare_target(results_dir, ra, rb, ref_a, ref_b, metric, n_boot, seed, alpha))
    return Comparison(str(ref_a), str(ref_b), metric, n_boot, seed, alpha, tuple(targets), skipped)


__all__ = ["Comparison", "ModelRef", "RunPredictions", "TargetComparison", "compare", "load_predictions", "load_run_frame"]

"""Is model B really better (or worse) than model A out of domain? A paired comparison.

``compare`` reloads the stored per-example predictions of both sides and, for every (pair,
target) both were scored on, estimates the difference B - A of the ID score, the OOD score and
the gap, over the seeds both sides have (seed s of A is paired with seed s of B: their
fine-tunes share data order). Scores are recomputed through :mod:`shiftbench.analysis.taskstats`, so
every metric the runner records (plus ``ece_debiased`` and ``brier``) works for both tasks; the
default is the task's headline metric (``macro_f1`` text, ``entity_micro_f1`` NER).

Which question is asked decides the interval (the output says which):

* **recipe** (the default whenever a side was fine-tuned by the harness, >= 2 shared seeds): "is
  recipe B better than recipe A?" The unit that varies is the fine-tune, so the interval holds
  seed-to-seed *and* test-example variation: :func:`shiftbench.analysis.stats.seed_aware_interval` on the
  per-seed differences, with the example-bootstrap replicates (2,000 resamples of the test
  units, one shared by both sides and every seed) giving the shared test-set variance.
* **conditional** (a recipe comparison with one shared seed): the paired example bootstrap of
  those two fine-tunes, printed as conditional on them; no verdict ("needs >= 2 seeds per side")
  and the gate never fails on it: one seed says nothing about the recipe.
* **fixed checkpoints** (both sides ``--eval-only``, or the same fine-tuned weights): "are
  these two checkpoints different on this population of texts?" The paired example bootstrap
  (percentile interval) and McNemar's test on OOD accuracy, as before.

ID and OOD units are resampled independently in each replicate, which is what the gap
difference (idB - oodB) - (idA - oodA) needs. The OOD verdict is "better"/"worse" when the
1 - alpha interval excludes 0. Each tested (pair, target) also gets its minimum detectable OOD
difference (80 % power at alpha = 0.05, :func:`shiftbench.analysis.stats.minimum_detectable`) and, with
``effect``, the seeds per side needed to detect that difference.

The gate (``--fail-on-regression``) runs a one-sided test of H0: B - A >= -margin per tested
(pair, target) and controls the family-wise error over all of them with Holm's step-down
procedure; a regression is a rejection at alpha.

Both models must have been scored on identical examples: equal source and target data
fingerprints and equal label arrays, else a one-line :class:`ShiftbenchError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shiftbench.analysis.leaderboard import stored_edges
from shiftbench.analysis.stats import (
    Interval,
    McNemarResult,
    SeedAwareInterval,
    holm,
    mcnemar,
    percentile_interval,
    seed_aware_interval,
    seeds_needed,
)
from shiftbench.analysis.taskstats import RunStats, check_metric, headline_metric, load_run_stats, replicate_scores
from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.registry.protocol import DEFAULT_PROTOCOL
from shiftbench.results.store import LoadedRuns, read_runs

_RUN_COLUMNS = [
    "run_id",
    "finetune_id",
    "model",
    "model_sha256",
    "pair",
    "source",
    "target",
    "task",
    "seed",
    "protocol",
    "protocol_hash",
    "metric",
    "source_fingerprint",
    "target_fingerprint",
    "label_space",
    "eval_only",
    "created_at",
    "ood_score",
    "selected_lr_edge",
    "selected_epoch_at_edge",
]
RECIPE, CONDITIONAL, FIXED = "recipe", "conditional on 1 seed", "fixed checkpoints"
NEEDS_SEEDS = "needs >= 2 seeds per side"
POWER = 0.8


@dataclass(frozen=True)
class ModelRef:
    """``model@protocol`` as given on the command line; a bare ``model`` means the protocol a run
    uses by default (``DEFAULT_PROTOCOL``, ``standard-v2``), so ``compare A B`` compares what
    ``run --model A`` and ``run --model B`` produce. Name ``@standard`` for the superseded board."""

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


def load_run_frame(
    results_dir: Path, metric: str | None = None, loaded: LoadedRuns | None = None
) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """One row per run, deduplicated by run id (``metric``: only runs that recorded it; ``loaded``:
    the run files already read, with at least these columns)."""
    loaded = read_runs(results_dir, columns=_RUN_COLUMNS) if loaded is None else loaded  # read only what is used
    frame = loaded.table.select(_RUN_COLUMNS).to_pandas()
    if metric is not None:
        frame = frame[frame["metric"] == metric]
    frame = frame.drop_duplicates("run_id").reset_index(drop=True)
    # An unlabelled target has null OOD scores on every row: nothing to compare or fit there.
    frame["labelled"] = frame["ood_score"].notna()
    return frame, loaded.skipped


@dataclass(frozen=True)
class TargetComparison:
    """B - A on one (pair, target); scores are means over the shared seeds.

    ``question``: :data:`RECIPE`, :data:`CONDITIONAL` or :data:`FIXED` (which interval is used).
    ``ood``: the OOD difference's variance decomposition. ``mde_ood``: smallest OOD difference
    detectable with 80 % power at ``alpha`` (NaN when not tested). ``p_regression``: one-sided
    p-value of H0 B - A >= -margin (NaN when not tested); ``p_holm`` its Holm-adjusted value over
    the comparison's family; ``regression``: ``p_holm`` <= alpha."""

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
    mcnemar_ood: McNemarResult  # on OOD accuracy, (seed, unit) pairs pooled
    verdict: str  # for OOD: "better", "worse", "no significant difference" or NEEDS_SEEDS
    metric: str = "macro_f1"
    question: str = RECIPE
    ood: SeedAwareInterval | None = None
    mde_ood: float = float("nan")
    p_regression: float = float("nan")
    p_holm: float = float("nan")
    regression: bool = False
    seeds_for_effect: int | None = None  # with ``effect``: seeds per side needed (None: not reachable)
    # Of the compared seeds, how many fine-tunes of A / of B selected at an edge of their protocol's
    # grid (shiftbench.registry.selection); None: no grid to be at the edge of (eval-only, icl, one lr and epoch).
    edge_seeds_a: int | None = None
    edge_seeds_b: int | None = None

    @property
    def tested(self) -> bool:
        return self.question != CONDITIONAL


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    metric: str | None  # None: each task's headline metric
    n_boot: int
    seed: int
    alpha: float
    targets: tuple[TargetComparison, ...]
    skipped_files: tuple[tuple[Path, str], ...] = ()
    margin: float = 0.0
    effect: float | None = None
    unlabelled: tuple[tuple[str, str], ...] = ()  # (pair, target) left out: the target has no labels

    @property
    def regressions(self) -> list[tuple[str, str]]:
        """(pair, target) where the Holm-adjusted one-sided test finds B worse than A by more than
        the margin out of domain (what ``--fail-on-regression`` fails on)."""
        return [(t.pair, t.target) for t in self.targets if t.regression]

    def to_text(self) -> str:
        level = f"{1 - self.alpha:.0%}"
        metric = self.metric or "each task's headline (macro_f1 text, entity_micro_f1 NER)"
        lines = [
            f"B = {self.b} vs A = {self.a}, metric {metric}; differences are B - A with {level} intervals "
            f"({self.n_boot} resamples of test units, seed {self.seed}).",
            f"  {RECIPE}: is recipe B better than recipe A? seeds and test examples both vary: per-seed differences "
            "paired by seed, shared test-set variance from the example bootstrap, generalized-pivot interval "
            "(shiftbench.analysis.stats.seed_aware_interval).",
            f"  {CONDITIONAL}: one shared seed: the example bootstrap of those two fine-tunes, no verdict on the recipe.",
            f"  {FIXED}: both sides scored fixed weights (--eval-only or the same fine-tune): paired example "
            "bootstrap (percentile) and McNemar on OOD accuracy.",
            f"  MDE: smallest OOD difference detectable with {POWER:.0%} power at alpha = {self.alpha:g}; Holm p: "
            f"one-sided test of B - A >= {-self.margin:g}, Holm-adjusted over the {sum(t.tested for t in self.targets)} "
            "tested (pair, target).",
        ]
        header = [
            "target",
            "metric",
            "question",
            "seeds",
            "n_id",
            "n_ood",
            "A OOD",
            "B OOD",
            f"B-A ID [{level}]",
            f"B-A OOD [{level}]",
            f"B-A gap [{level}]",
            "MDE",
            "Holm p",
            "McNemar (OOD accuracy)",
            "OOD verdict",
        ]
        for pair in dict.fromkeys(t.pair for t in self.targets):
            rows = [t for t in self.targets if t.pair == pair]
            lines += ["", f"{pair} (source {rows[0].source})"]
            body = [
                [
                    t.target,
                    t.metric,
                    t.question,
                    ",".join(map(str, t.seeds)),
                    str(t.n_id),
                    str(t.n_ood),
                    f"{t.ood_a:.4f}",
                    f"{t.ood_b:.4f}",
                    str(t.id_diff),
                    str(t.ood_diff),
                    str(t.gap_diff),
                    _num(t.mde_ood),
                    _p(t.p_holm),
                    _mcnemar_text(t.mcnemar_ood, len(t.seeds)) if t.question == FIXED else "-",
                    t.verdict,
                ]
                for t in rows
            ]
            lines += ["  " + line for line in _table(header, body)]
            if self.effect is not None:
                for t in rows:
                    lines.append(f"  {t.target}: {_effect_text(t, self.effect)}")
            for t in rows:
                if note := _edge_text(t, self.a, self.b):
                    lines.append(f"  {t.target}: {note}")
        worse = ", ".join(f"{p}/{t}" for p, t in self.regressions) or "none"
        margin = f" by more than {self.margin:g}" if self.margin else ""
        lines += [
            "",
            f"regressions (B significantly worse OOD{margin}, Holm-adjusted one-sided p <= {self.alpha:g}): {worse}",
        ]
        if self.skipped_files:
            lines.append(f"({len(self.skipped_files)} unreadable run file(s) skipped)")
        for pair, target in self.unlabelled:
            lines.append(
                f"skipped {pair}/{target}: the target is unlabelled (no true OOD score to compare; see its ood_estimate columns)"
            )
        return "\n".join(lines)


def _num(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4f}"


def _p(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4f}" if x >= 1e-4 else f"{x:.1e}"


def _effect_text(t: TargetComparison, effect: float) -> str:
    if t.question == CONDITIONAL:
        return f"to detect an OOD difference of {effect:g}: unknown, {NEEDS_SEEDS} to estimate the seed variance"
    if t.question == FIXED:
        return (
            f"to detect an OOD difference of {effect:g}: seeds do not enter (fixed checkpoints); MDE {_num(t.mde_ood)}"
        )
    if t.seeds_for_effect is None:
        floor = t.ood.v_example**0.5 if t.ood is not None else float("nan")
        return (
            f"to detect an OOD difference of {effect:g}: not reachable with more seeds (the test set's own "
            f"noise, s.e. {floor:.4f}, alone prevents it, or it needs > 200 seeds per side)"
        )
    return f"to detect an OOD difference of {effect:g} with {POWER:.0%} power: {t.seeds_for_effect} seeds per side"


def _edge_text(t: TargetComparison, a: str, b: str) -> str | None:
    """A note when either side's fine-tunes selected at an edge of their grid: a finding, not a result."""
    sides = [(ref, k) for ref, k in ((a, t.edge_seeds_a), (b, t.edge_seeds_b)) if k]
    if not sides:
        return None
    n = len(t.seeds)
    which = " and ".join(f"{ref} in {k} of {n} seed{'s' if n != 1 else ''}" for ref, k in sides)
    return (
        f"grid edge: {which} selected at an edge of the protocol's grid (smallest or largest learning rate, or last "
        "epoch): a recipe stopped at its grid's edge may be under-trained, so the difference may be the grid's "
        "rather than the checkpoint's"
    )


def _edge_seeds(rows: pd.DataFrame, seeds: Sequence[int]) -> int | None:
    """How many of ``seeds``' fine-tunes (one run row each) selected at an edge; None if none could."""
    at_edge, applicable = stored_edges(rows.set_index("seed").loc[list(seeds)])
    return int(at_edge.sum()) if applicable.any() else None


def _mcnemar_text(r: McNemarResult, n_seeds: int) -> str:
    p = f"{r.p_value:.4f}" if r.p_value >= 1e-4 else f"{r.p_value:.1e}"
    return f"p={p} b={r.b} c={r.c} {r.method}, {n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2, len(header) - 1}
    fmt = lambda r: "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header).rstrip(), "-" * sum(widths + [2 * (len(widths) - 1)]), *(fmt(r).rstrip() for r in rows)]


def _select(frame: pd.DataFrame, ref: ModelRef, available: list[str], results_dir: Path) -> pd.DataFrame:
    rows = frame[(frame["model"] == ref.model) & (frame["protocol"] == ref.protocol)]
    if rows.empty:
        same_model = [r for r in available if r.rpartition("@")[0] == ref.model]  # other protocols
        hint = (
            " (did you mean " + " or ".join(map(repr, same_model)) + "?)"
            if same_model
            else did_you_mean(str(ref), available)
        )
        raise ShiftbenchError(f"no runs of {ref} in {results_dir}{hint}")
    return rows


def _one_version(rows: pd.DataFrame, ref: ModelRef, pair: str, target: str) -> None:
    """Runs of different model weights, protocol versions or data are never pooled."""
    for col, what in (
        ("model_sha256", "model weights"),
        ("protocol_hash", "protocol versions"),
        ("source_fingerprint", "source data"),
        ("target_fingerprint", "target data"),
    ):
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


def _question(ra: pd.DataFrame, rb: pd.DataFrame, seeds: list[int]) -> str:
    fa, fb = ra.set_index("seed"), rb.set_index("seed")
    if (fa.loc[seeds, "eval_only"].all() and fb.loc[seeds, "eval_only"].all()) or all(
        fa.loc[s, "finetune_id"] == fb.loc[s, "finetune_id"] for s in seeds
    ):
        return FIXED
    return RECIPE if len(seeds) >= 2 else CONDITIONAL


def _differences(
    stats: dict[ModelRef, list[RunStats]],
    a: ModelRef,
    b: ModelRef,
    split: str,
    task: str,
    metric: str,
    tags: tuple[str, ...],
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-seed A scores (S,), per-seed B scores (S,), replicate differences B - A (R, S))."""
    blocks = [r.labelled(split).values for pair in zip(stats[a], stats[b]) for r in pair]  # a_0, b_0, a_1, ...
    points, reps = replicate_scores(blocks, task, metric, tags, n_boot, rng)
    s = len(stats[a])
    points, reps = points.reshape(s, 2), reps.reshape(n_boot, s, 2)
    return points[:, 0], points[:, 1], reps[..., 1] - reps[..., 0]


def _compare_target(
    results_dir: Path,
    ra: pd.DataFrame,
    rb: pd.DataFrame,
    a: ModelRef,
    b: ModelRef,
    metric: str | None,
    n_boot: int,
    seed: int,
    alpha: float,
    margin: float,
    effect: float | None,
) -> TargetComparison:
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
    task, tags = str(ra["task"].iloc[0]), tuple(ra["label_space"].iloc[0])
    if str(rb["task"].iloc[0]) != task or tuple(rb["label_space"].iloc[0]) != tags:
        raise ShiftbenchError(f"{pair}/{target}: {a} and {b} differ in task or label space; predictions are not paired")
    metric = metric or headline_metric(task)
    check_metric(metric, task, tags, f"pair {pair}")
    by_seed = {ref: rows.set_index("seed") for ref, rows in ((a, ra), (b, rb))}
    stats = {
        ref: [load_run_stats(results_dir, by_seed[ref].loc[s, "run_id"], task, tags) for s in seeds] for ref in (a, b)
    }
    first = stats[a][0]
    for r in stats[a] + stats[b]:
        for split in ("id", "ood"):
            if not np.array_equal(r.labelled(split).labels, first.labelled(split).labels):
                raise ShiftbenchError(
                    f"{pair}/{target}: run {r.run_id} has different {split.upper()} test labels than run {first.run_id}; "
                    "predictions are not paired"
                )
    question = _question(ra, rb, seeds)
    ss_id, ss_ood = np.random.SeedSequence(seed).spawn(2)  # independent ID and OOD resamples
    pa_, pb_, reps = {}, {}, {}
    for split, ss in (("id", ss_id), ("ood", ss_ood)):
        pa_[split], pb_[split], reps[split] = _differences(
            stats, a, b, split, task, metric, tags, n_boot, np.random.default_rng(ss)
        )
    d = {split: pb_[split] - pa_[split] for split in ("id", "ood")}
    d["gap"], reps["gap"] = d["id"] - d["ood"], reps["id"] - reps["ood"]
    if question == RECIPE:
        est = {k: seed_aware_interval(d[k], reps[k], alpha) for k in ("id", "ood", "gap")}
        shown = {k: est[k].interval for k in est}
        ood = est["ood"]
    else:  # the fine-tunes at hand are the object: example bootstrap of the mean difference, percentile interval
        shown = {k: percentile_interval(float(d[k].mean()), reps[k].mean(axis=1), alpha) for k in ("id", "ood", "gap")}
        ood = seed_aware_interval([float(d["ood"].mean())], reps["ood"].mean(axis=1)[:, None], alpha)
    ood_ci = shown["ood"]
    if question == CONDITIONAL:
        verdict, mde, p_reg, needed = NEEDS_SEEDS, float("nan"), float("nan"), None
    else:
        verdict = "better" if ood_ci.low > 0 else "worse" if ood_ci.high < 0 else "no significant difference"
        mde, p_reg = ood.minimum_detectable(POWER), ood.p_below(-margin)
        needed = None
        if effect is not None and question == RECIPE:
            needed = seeds_needed(
                effect, ood.v_example, ood.v_seed * ood.n_seeds, alpha, POWER, own_var=ood.v_own * ood.n_seeds
            )
    correct = {
        ref: np.concatenate([r.labelled("ood").preds == r.labelled("ood").labels for r in stats[ref]]) for ref in (a, b)
    }
    return TargetComparison(
        pair=pair,
        source=ra["source"].iloc[0],
        target=target,
        seeds=tuple(int(s) for s in seeds),
        n_id=first.id.n_units,
        n_ood=first.labelled("ood").n_units,
        id_a=float(pa_["id"].mean()),
        id_b=float(pb_["id"].mean()),
        ood_a=float(pa_["ood"].mean()),
        ood_b=float(pb_["ood"].mean()),
        id_diff=shown["id"],
        ood_diff=ood_ci,
        gap_diff=shown["gap"],
        mcnemar_ood=mcnemar(correct[a], correct[b]),
        verdict=verdict,
        metric=metric,
        question=question,
        ood=ood,
        mde_ood=mde,
        p_regression=p_reg,
        seeds_for_effect=needed,
        edge_seeds_a=_edge_seeds(ra, seeds),
        edge_seeds_b=_edge_seeds(rb, seeds),
    )


def compare(
    results_dir: Path,
    a: str,
    b: str,
    pairs: Sequence[str] | None = None,
    metric: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    margin: float = 0.0,
    effect: float | None = None,
) -> Comparison:
    """Compare B against A on every (pair, target) both have, over the seeds both have.

    ``a``/``b``: "model" or "model@protocol" (protocol defaults to ``DEFAULT_PROTOCOL``, standard-v2). ``metric``: any
    metric of the pair's task (:mod:`shiftbench.analysis.taskstats`); None: the task's headline metric.
    ``margin`` in [0, 1): the gate's tolerated OOD loss. ``effect`` > 0: also say how many seeds
    per side would detect an OOD difference of that size.
    """
    if n_boot < 1:
        raise ShiftbenchError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ShiftbenchError(f"alpha must lie in (0, 1), got {alpha}")
    if not (0 <= margin < 1):
        raise ShiftbenchError(f"margin must lie in [0, 1) (0: no margin), got {margin}")
    if effect is not None and not (effect > 0):
        raise ShiftbenchError(f"effect must be > 0, got {effect}")
    results_dir = Path(results_dir)
    ref_a, ref_b = ModelRef.parse(a), ModelRef.parse(b)
    frame, skipped = load_run_frame(results_dir)
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
                raise ShiftbenchError(
                    f"pair {p!r} has no results for both {ref_a} and {ref_b}{did_you_mean(p, shared)}"
                )
        common = [(p, t) for p, t in common if p in set(pairs)]
    unlabelled_keys = set(zip(frame.loc[~frame["labelled"], "pair"], frame.loc[~frame["labelled"], "target"]))
    unlabelled = tuple(k for k in common if k in unlabelled_keys)
    common = [k for k in common if k not in unlabelled_keys]
    if not common:
        where = ", ".join(f"{p}/{t}" for p, t in unlabelled)
        raise ShiftbenchError(
            f"{ref_a} vs {ref_b}: every shared target is unlabelled ({where}): there is no true OOD score to compare"
        )
    targets = []
    for pair, target in common:
        ra = rows_a[(rows_a["pair"] == pair) & (rows_a["target"] == target)]
        rb = rows_b[(rows_b["pair"] == pair) & (rows_b["target"] == target)]
        targets.append(_compare_target(results_dir, ra, rb, ref_a, ref_b, metric, n_boot, seed, alpha, margin, effect))
    tested = [i for i, t in enumerate(targets) if t.tested]
    adjusted = holm([targets[i].p_regression for i in tested])
    for i, p in zip(tested, adjusted):
        targets[i] = replace(targets[i], p_holm=float(p), regression=bool(p <= alpha))
    return Comparison(
        str(ref_a), str(ref_b), metric, n_boot, seed, alpha, tuple(targets), skipped, margin, effect, unlabelled
    )


__all__ = [
    "CONDITIONAL",
    "FIXED",
    "NEEDS_SEEDS",
    "RECIPE",
    "Comparison",
    "ModelRef",
    "TargetComparison",
    "compare",
    "load_run_frame",
]

"""One self-contained HTML report of a results directory.

``write_report(results_dir)`` reads every run file (as the leaderboard does) and writes
``<results_dir>/report.html``: no external scripts, fonts, style sheets or URLs, plots inlined as
``data:`` PNGs, a small inline style sheet. Per pair it shows the leaderboard (means with 95 %
CIs over seeds), the ID vs OOD scatter per target (with the effective-robustness baseline of each
protocol family :mod:`shiftbench.analysis.robustness` can fit one for, i.e. with at least three
models), the gap bars, the effective-robustness table (each line and point with its family), the
label priors of the source test split vs each target test split, the ID/OOD text overlap counts
and the pair's data card (``<cards_dir>/pairs/<pair>.md``).

The same PNGs are written to ``<results_dir>/plots/`` (``<pair>__scatter__<target>.png``,
``<pair>__gaps.png``). Every file is written atomically. The report holds no timestamp of its
own, so the same results give the same bytes (see :mod:`shiftbench.reporting.plots` for the PNGs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shiftbench.analysis.leaderboard import CI_EXAMPLES_ONLY, build_leaderboard, edge_cell
from shiftbench.analysis.taskstats import headline_metric
from shiftbench.core.atomic import write_atomic, write_text_atomic
from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.version import __version__
from shiftbench.execution.shift import read_shift_table
from shiftbench.reporting.cards import metric_card_file
from shiftbench.reporting.report_html import (
    CSS,
    anchor,
    esc,
    file_part,
    fmt_num,
    html_table,
    img_tag,
    markdown_to_html,
    pct_ci,
    with_ci,
)
from shiftbench.results.store import LoadedRuns, read_runs
from shiftbench.tasks import get_task

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"


def _metric_note(task: str, metric: str) -> str:
    """What the shown metric is (its card's definition, shortened to the first sentence) and which way is better."""
    kind = get_task(task)
    doc = kind.metric_doc(metric)
    first = doc.definition.split(". ")[0].rstrip(".") + "."
    better = "higher" if doc.higher_is_better else "lower"
    return (
        f'<p class="note"><code>{esc(metric)}</code>: {esc(first)} {better.capitalize()} is better; intervals '
        f"resample test {kind.unit}s (definition and example: <code>data_cards/metrics/{esc(metric_card_file(doc.name))}</code>).</p>"
    )


def _leaderboard_section(rows: pd.DataFrame) -> str:
    header = ["model", "protocol", "target", "n seeds", "ID", "OOD", "gap", "relative gap", "OOD rank", "at grid edge"]
    body = []
    for r in rows.sort_values(
        ["target", "model", "protocol", "model_sha256", "protocol_hash"], kind="mergesort"
    ).itertuples():
        one = getattr(r, "ci_method", None) == CI_EXAMPLES_ONLY
        mark = " †" if one else ""
        rank = getattr(r, "rank", float("nan"))
        body.append(
            [
                r.model,
                r.protocol,
                r.target,
                str(r.n_seeds) + mark,
                with_ci(r.id_score_mean, r.id_score_ci_low, r.id_score_ci_high),
                with_ci(r.ood_score_mean, r.ood_score_ci_low, r.ood_score_ci_high),
                with_ci(r.gap_mean, r.gap_ci_low, r.gap_ci_high),
                pct_ci(r.relative_gap_mean, r.relative_gap_ci_low, r.relative_gap_ci_high),
                str(int(rank)) if pd.notna(rank) else "–",
                edge_cell(getattr(r, "n_edge_selections", pd.NA), r.n_seeds),
            ]
        )
    table = html_table(header, body, [False, False, False, True, True, True, True, True, True, True], cls="leaderboard")
    if "n_edge_selections" in rows and (rows["n_edge_selections"].fillna(0) > 0).any():
        table += (
            '<p class="note">at grid edge: how many seeds selected the smallest or largest learning rate of '
            "the protocol's grid or the last epoch they trained; the grid may not bracket their optimum "
            "(shiftbench.registry.selection).</p>"
        )
    if "ci_method" in rows and (rows["ci_method"] == CI_EXAMPLES_ONLY).any():
        table += (
            '<p class="note">† one seed: its interval holds test-example noise only (conditional on that '
            "fine-tune); seed-to-seed variation is unknown.</p>"
        )
    return table


def _robustness_section(er: pd.DataFrame | None, fits: Sequence[Any], note: str | None) -> str:
    parts = ["<h3>Effective robustness</h3>"]
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
        return "".join(parts)
    if fits:
        parts.append(
            '<p class="note">Baseline per target and protocol family: OOD = sigmoid(slope · logit(ID) + intercept), '
            "fitted through the family's plain fine-tunes (family standard: standard and the protocols built on it; "
            "family standard-v2: standard-v2 and the v2 remedies; through every point of the family when there are "
            "fewer than three). Effective robustness is a model's OOD score minus its family's baseline prediction "
            "at its ID score (95 % two-level bootstrap interval: seeds and test examples resampled), remedies "
            "included. ΔER: a remedy's effective robustness minus that of the same model under its family's plain "
            "protocol, paired over their shared seeds (seed- and example-aware interval; with one shared seed "
            "conditional on those fine-tunes). ‡ marks an extrapolation: an ID score outside the fitted points' ID "
            "range.</p>"
        )
        parts.append(
            html_table(
                [
                    "target",
                    "family",
                    "fitted on",
                    "protocol hashes",
                    "points in the fit",
                    "fitted ID range",
                    "slope",
                    "intercept",
                ],
                [
                    [
                        f.target,
                        getattr(f, "family", ""),
                        ", ".join(getattr(f, "fitted_on", ())),
                        ", ".join(h[:12] for h in f.protocol_hash_set),
                        str(f.n_models),
                        f"{fmt_num(f.id_range[0])} – {fmt_num(f.id_range[1])}",
                        fmt_num(f.slope),
                        fmt_num(f.intercept),
                    ]
                    for f in sorted(
                        fits, key=lambda f: (f.target, getattr(f, "family", ""), tuple(f.protocol_hash_set))
                    )
                ],
                [False, False, False, False, True, True, True, True],
            )
        )
    if er is None or er.empty:
        parts.append(
            '<p class="note">No effective-robustness estimate for this pair: it needs at least three '
            "models scored on the same target under the same protocol.</p>"
        )
        return "".join(parts)
    body = []
    for r in er.sort_values(["target", "family", "model", "protocol"], kind="mergesort").itertuples():
        extrapolated = bool(getattr(r, "extrapolated", False))
        base = getattr(r, "base", None)
        delta = "–"
        if isinstance(base, str) and base:
            delta = (
                f"{with_ci(r.delta_er, r.delta_er_ci_low, r.delta_er_ci_high)} vs {base}, "
                f"{int(r.delta_er_seeds)} seed{'s' if int(r.delta_er_seeds) != 1 else ''}"
            )
        body.append(
            [
                r.model,
                r.protocol,
                r.target,
                r.family,
                str(r.n_seeds),
                fmt_num(r.id_mean) + (" ‡" if extrapolated else ""),
                fmt_num(r.ood_mean),
                fmt_num(r.predicted_ood),
                with_ci(r.effective_robustness, r.er_ci_low, r.er_ci_high),
                delta,
            ]
        )
    parts.append(
        html_table(
            [
                "model",
                "protocol",
                "target",
                "family",
                "n seeds",
                "ID",
                "OOD",
                "predicted OOD",
                "effective robustness",
                "ΔER vs the family's plain fine-tune",
            ],
            body,
            [False, False, False, False, True, True, True, True, True, True],
            cls="robustness",
        )
    )
    return "".join(parts)


def _counts_cell(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.1f} %)" if total else str(n)


def _tv_distance(a: dict[str, int], b: dict[str, int]) -> float | None:
    ta, tb = sum(a.values()), sum(b.values())
    if not ta or not tb:
        return None
    return 0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in set(a) | set(b))


@dataclass(frozen=True)
class _PriorVariant:
    """One version of a target's test data beside its source's test data (label counts, overlap)."""

    target: str
    source: str
    target_fingerprint: str
    source_fingerprint: str
    dedup: bool
    id_counts: dict[str, int]  # label -> examples in the source test split
    ood_counts: dict[str, int]  # label -> examples in the target test split
    space: list[str]
    n_ood: int
    overlap_exact: Any  # count, or None/NaN when not checked
    overlap_normalised: Any

    @property
    def id_key(self) -> tuple:
        return (self.source_fingerprint, tuple(sorted(self.id_counts.items())))


def _priors_section(runs: pd.DataFrame) -> str:
    """Label priors of the source test split vs every target test split, from the run rows."""
    keys = ["target", "source", "source_fingerprint", "target_fingerprint", "dedup"]
    variants = []
    seen = set()
    for r in runs.sort_values(keys + ["run_id"], kind="mergesort").itertuples():
        space = [str(x) for x in (r.label_space if r.label_space is not None else [])]
        id_counts = [int(x) for x in (r.id_label_counts if r.id_label_counts is not None else [])]
        ood_counts = [int(x) for x in (r.ood_label_counts if r.ood_label_counts is not None else [])]
        ident = (
            r.target,
            r.source_fingerprint,
            r.target_fingerprint,
            bool(r.dedup),
            tuple(space),
            tuple(id_counts),
            tuple(ood_counts),
        )
        if ident in seen:
            continue
        seen.add(ident)
        variants.append(
            _PriorVariant(
                target=r.target,
                source=r.source,
                target_fingerprint=r.target_fingerprint,
                source_fingerprint=r.source_fingerprint,
                dedup=bool(r.dedup),
                id_counts=dict(zip(space, id_counts)),
                ood_counts=dict(zip(space, ood_counts)),
                space=space,
                n_ood=int(r.n_ood),
                overlap_exact=r.overlap_exact,
                overlap_normalised=r.overlap_normalised,
            )
        )
    if not variants:
        return ""
    labels: list[str] = []
    for v in variants:
        labels += [x for x in v.space if x not in labels]
    per_target = pd.Series([v.target for v in variants]).value_counts()
    ambiguous = len({v.id_key for v in variants}) > 1

    def name(v: _PriorVariant, role: str) -> str:
        base = f"{v.source} test (ID)" if role == "id" else f"{v.target} test (OOD)"
        extra = []
        if role == "id" and ambiguous:
            extra.append(f"data {str(v.source_fingerprint)[:8]}")
        if role == "ood" and per_target[v.target] > 1:
            extra.append(f"data {str(v.target_fingerprint)[:8]}" + (", dedup" if v.dedup else ""))
        return base + (f" [{'; '.join(extra)}]" if extra else "")

    columns: list[tuple[str, dict[str, int]]] = []
    id_seen = set()
    for v in variants:
        if v.id_key not in id_seen:
            id_seen.add(v.id_key)
            columns.append((name(v, "id"), v.id_counts))
    columns += [(name(v, "ood"), v.ood_counts) for v in variants]
    totals = [sum(c.values()) for _, c in columns]
    body = [[lab] + [_counts_cell(c.get(lab, 0), t) for (_, c), t in zip(columns, totals)] for lab in labels]
    body.append(["examples"] + [str(t) for t in totals])
    parts = [
        "<h3>Label priors: source test vs target test</h3>",
        html_table(["label"] + [c[0] for c in columns], body, [False] + [True] * len(columns), cls="priors"),
    ]
    tv = []
    for v in variants:
        d = _tv_distance(v.id_counts, v.ood_counts)
        tv.append(f"{name(v, 'ood')}: {fmt_num(d, 3)}")
    parts.append(
        f'<p class="note">Total variation distance between the source test and target test label priors: '
        f"{esc('; '.join(tv))}.</p>"
    )
    parts.append("<h3>Overlap of target test texts with the source train split</h3>")
    parts.append(
        '<p class="note">Target test examples whose text also occurs in the source train split, exactly and '
        "after normalisation (lower-case, URLs and @mentions removed, whitespace collapsed); "
        "“–” means not checked.</p>"
    )
    body = []
    for v in variants:
        n = v.n_ood
        cells = [name(v, "ood").removesuffix(" test (OOD)"), str(n)]
        for x in (v.overlap_exact, v.overlap_normalised):
            cells.append("–" if x is None or (isinstance(x, float) and math.isnan(x)) else _counts_cell(int(x), n))
        cells.append("yes" if v.dedup else "no")
        body.append(cells)
    parts.append(
        html_table(
            ["target", "scored examples", "exact", "normalised", "removed (--dedup)"],
            body,
            [False, True, True, True, False],
            cls="overlap",
        )
    )
    return "".join(parts)


def _shift_section(pair_runs: pd.DataFrame, shift_rows: pd.DataFrame) -> str:
    """How far each target is from the source: the cached `shiftbench shift` row whose data
    fingerprints are those the pair's runs were scored on (another version of the data is
    another row, never shown here)."""
    body = []
    for target, fps in (
        pair_runs.drop_duplicates("target").set_index("target")[["source_fingerprint", "target_fingerprint"]].iterrows()
    ):
        hit = (
            shift_rows[
                (shift_rows["source_fingerprint"] == fps["source_fingerprint"])
                & (shift_rows["target_fingerprint"] == fps["target_fingerprint"])
            ]
            if not shift_rows.empty
            else shift_rows
        )
        if hit.empty:
            continue
        r = hit.sort_values("created_at").iloc[-1]
        tv = "–" if pd.isna(r["label_prior_tv"]) else f"{r['label_prior_tv']:.3f} ({r['label_prior_method']})"
        body.append(
            [
                str(target),
                f"{r['vocab_jaccard']:.3f}",
                f"{r['target_oov_rate']:.3f}",
                tv,
                f"{r['mmd2']:.4f} [p={r['mmd2_p_value']:.3f}]",
                f"{r['mmd2_baseline']:.4f} [p={r['mmd2_baseline_p_value']:.3f}]",
                f"{r['pad']:.3f}",
                f"{r['pad_baseline']:.3f}",
            ]
        )
    head = "<h3>How far the target is</h3>"
    if not body:
        return (
            head
            + '<p class="note">No shift measures cached for these data: run <code>shiftbench shift --pair …</code>.</p>'
        )
    header = [
        "target",
        "vocabulary Jaccard",
        "target OOV rate",
        "label-prior TV",
        "MMD²",
        "MMD² source/source",
        "proxy A-distance",
        "PAD source/source",
    ]
    note = (
        '<p class="note">From <code>shiftbench shift</code> (cached under <code>shift/</code> for these data fingerprints): '
        "vocabulary overlap with source train, share of target tokens unseen there, label-prior total variation "
        "(true labels, or estimated for an unlabelled target), MMD² of all-MiniLM-L6-v2 sentence embeddings with its "
        "permutation p-value and proxy A-distance of a linear domain classifier, each beside a source-vs-source "
        "baseline.</p>"
    )
    return head + html_table(header, body, [False] + [True] * 7, cls="shift") + note


def _card_section(pair: str, cards_dir: Path | None) -> str:
    if cards_dir is None:
        return ""
    path = Path(cards_dir) / "pairs" / f"{pair}.md"
    if not path.is_file():
        return f'<p class="note">No data card for this pair ({esc(path)} not found).</p>'
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ShiftbenchError(f"cannot read data card {path}: {exc}") from None
    return (
        f'<details class="card"><summary>Data card: {esc(pair)} ({esc(path)})</summary>'
        f"{markdown_to_html(text)}</details>"
    )


def _robustness(
    results_dir: Path, metric: str, loaded: LoadedRuns, pairs: Sequence[str]
) -> tuple[list[Any], pd.DataFrame | None, str | None]:
    """(fits, per-model table, note): the note says why there is nothing, if so."""
    try:
        from shiftbench.analysis import robustness
    except ModuleNotFoundError as exc:
        if exc.name != "shiftbench.analysis.robustness":
            raise
        return (
            [],
            None,
            "Effective robustness is not available in this installation (no shiftbench.analysis.robustness).",
        )
    try:
        fits, table = robustness.effective_robustness(results_dir, metric=metric, loaded=loaded, pairs=tuple(pairs))
    except ShiftbenchError as exc:
        return [], None, f"Effective robustness could not be estimated: {exc}"
    return list(fits), table, None


# --- the report ----------------------------------------------------------------------------


def write_report(
    results_dir: Path, out: Path | None = None, cards_dir: Path | None = Path("data_cards"), metric: str | None = None
) -> Path:
    """Write the HTML report (default ``<results_dir>/report.html``) and the PNGs under
    ``<results_dir>/plots/``; return the report's path.

    ``cards_dir``: where ``pairs/<pair>.md`` data cards are looked up (None: no cards).
    ``metric``: the metric shown (tables, plots, effective robustness); None: each pair's
    task's headline metric (``macro_f1`` text, ``entity_micro_f1`` NER).
    """
    from shiftbench.reporting.plots import gap_bars, id_ood_scatter

    results_dir = Path(results_dir)
    out = results_dir / REPORT_FILE if out is None else Path(out)
    loaded = read_runs(results_dir)
    if loaded.table.num_rows == 0:
        raise ShiftbenchError(f"no results in {results_dir}")
    runs_all = loaded.table.to_pandas()
    metrics = sorted(set(runs_all["metric"]))
    if metric is not None and metric not in metrics:
        raise ShiftbenchError(f"no results for metric {metric!r} in {results_dir}{did_you_mean(metric, metrics)}")
    # the metric shown per pair: the one asked for, else the pair's task's headline
    pair_metric = {
        p: metric or headline_metric(t)
        for p, t in runs_all.drop_duplicates("pair")[["pair", "task"]].itertuples(index=False)
    }
    shown = runs_all["metric"] == runs_all["pair"].map(pair_metric)
    runs = runs_all[shown]
    requested = metric
    full_board, _ = build_leaderboard(results_dir, loaded=loaded)  # with seed- and example-aware intervals
    board = full_board[full_board["metric"] == full_board["pair"].map(pair_metric)].reset_index(drop=True)
    fits, er, er_note = [], None, None
    for m in sorted(set(pair_metric.values())):
        with_m = sorted(p for p, pm in pair_metric.items() if pm == m and p in set(board["pair"]))
        if not with_m:
            continue
        f, e, note = _robustness(results_dir, m, loaded, with_m)
        fits += f
        er = e if er is None else pd.concat([er, e], ignore_index=True) if e is not None else er
        er_note = er_note or note

    models = sorted(set(runs["model"]))
    pairs = sorted(set(board["pair"]))
    run_files = runs_all["run_id"].nunique()
    versions = sorted(set(runs_all["shiftbench_version"].dropna()))
    created = pd.to_datetime(runs_all["created_at"]).dropna()
    span = f"{created.min():%Y-%m-%d %H:%M} – {created.max():%Y-%m-%d %H:%M} UTC" if len(created) else "–"
    protocols = sorted(set(runs["protocol"]))

    meta = [
        ("shiftbench", f"{__version__} (report); runs written by {', '.join(versions) or '?'}"),
        ("results", f"{results_dir}"),
        ("runs", f"{run_files} run files ({len(runs_all)} rows), {runs['finetune_id'].nunique()} fine-tunes"),
        ("models", ", ".join(models)),
        ("pairs", ", ".join(pairs)),
        ("protocols", ", ".join(protocols)),
        (
            "metric",
            ", ".join(sorted(set(pair_metric.values())))
            + (" (each task's headline)" if requested is None else "")
            + f" (recorded: {', '.join(metrics)})",
        ),
        ("runs created", span),
    ]
    doc = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>shiftbench report: {esc(', '.join(pairs))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>shiftbench report</h1>",
        f'<p class="note">Generated by <code>shiftbench.reporting.report</code> {esc(__version__)} from the run files in '
        f"<code>{esc(results_dir)}</code>; ID is the source test split, OOD a target test split, gap = ID − OOD. "
        "Scores are means over seeds with 95 % intervals in brackets that hold both seed-to-seed and test-example "
        "variation (one seed, marked †: test-example variation only); OOD rank: models the best is not "
        "significantly better than share its rank.</p>",
        html_table(None, meta, cls="meta"),
    ]
    if loaded.skipped:
        doc.append(f'<p class="warn">{len(loaded.skipped)} file(s) in runs/ were skipped:</p><ul>')
        doc += [f"<li><code>{esc(Path(p).name)}</code>: {esc(why)}</li>" for p, why in loaded.skipped]
        doc.append("</ul>")
    doc.append(
        "<nav><ul>" + "".join(f'<li><a href="#{anchor(p)}">{esc(p)}</a></li>' for p in pairs) + "</ul></nav></header>"
    )

    plots_dir = results_dir / PLOTS_DIR
    pngs: list[tuple[Path, bytes]] = []
    shift_rows = read_shift_table(
        results_dir
    ).to_pandas()  # `shiftbench shift`'s cache; none: the section says how to fill it
    for pair in pairs:
        metric = pair_metric[pair]  # the metric shown for this pair
        rows = board[board["pair"] == pair]
        pair_runs = runs[runs["pair"] == pair]
        first = pair_runs.iloc[0]
        doc.append(f'<section id="{anchor(pair)}"><h2>Pair {esc(pair)}</h2>')
        doc.append(
            f'<p class="note">{esc(first["source"])} → {esc(", ".join(sorted(set(rows["target"]))))} '
            f"({esc(first['task'])}); models: {esc(', '.join(sorted(set(rows['model']))))}.</p>"
        )
        doc.append(f"<h3>Leaderboard ({esc(metric)})</h3>")
        doc.append(_metric_note(str(first["task"]), metric))
        doc.append(_leaderboard_section(rows))

        pair_fits = [f for f in fits if f.pair == pair and f.metric == metric and int(f.n_models) >= 3]
        doc.append("<h3>ID vs OOD</h3>")
        for target in sorted(set(rows["target"])):
            fit = [f for f in pair_fits if f.target == target]
            png = id_ood_scatter(board, pair, target, metric, fit=fit or None)
            pngs.append((plots_dir / f"{file_part(pair)}__scatter__{file_part(target)}.png", png))
            doc.append(img_tag(png, f"{pair}: ID vs OOD {metric} on {target}"))
        png = gap_bars(board, pair, metric)
        pngs.append((plots_dir / f"{file_part(pair)}__gaps.png", png))
        doc.append(f"<h3>Gap per target ({esc(metric)})</h3>")
        doc.append(img_tag(png, f"{pair}: gap in {metric} per target"))

        pair_er = None
        if er is not None and not er.empty:
            pair_er = er[(er["pair"] == pair) & (er["metric"] == metric)]
        doc.append(_robustness_section(pair_er, pair_fits, er_note))
        doc.append(_priors_section(pair_runs))
        doc.append(_shift_section(pair_runs, shift_rows))
        doc.append(_card_section(pair, cards_dir))
        doc.append("</section>")
    doc.append("</body></html>\n")

    for path, png in pngs:
        write_atomic(path, lambda p, png=png: p.write_bytes(png))
    write_text_atomic(out, "\n".join(doc))
    return out

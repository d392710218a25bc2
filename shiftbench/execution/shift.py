"""How far is a target from its source? Label-free shift measures per (source, target) data pair.

Measures (source = the source's **train** split as the runner trains on it, carving included;
target = the target's test split):

* **Vocabulary**: Jaccard overlap of the word types, and the target's OOV rate (share of its
  word *tokens* whose type never occurs in source train) -- texts normalised as for the overlap
  check (lower-cased, URLs and @mentions dropped), words = ``\\w+`` runs.
* **Label priors**: total-variation distance between source-train and target label
  distributions (the target's true labels where it has them; an estimate, e.g. BBSE's, can be
  passed in for an unlabelled target).
* **MMD^2** (unbiased, Gretton et al. 2012) between sentence embeddings of a fixed frozen encoder
  (all-MiniLM-L6-v2, mean-pooled, unit norm) with a Gaussian kernel of median-heuristic width,
  and a permutation p-value; beside it the same statistic between **two disjoint halves of the
  source sample** (the in-domain baseline: what "no shift" looks like at this sample size).
* **Proxy A-distance** (Ben-David et al. 2007): 2 (1 - 2 err) with err the 5-fold
  cross-validated error of an L2-regularised logistic-regression domain classifier on the
  embeddings (0: indistinguishable, 2: perfectly separable), and the same for the two source
  halves.

Embedding is the expensive part, so MMD and PAD use a fixed-seed **subsample**: ``sample_size``
texts per side (default 1,000; the baseline splits the source sample in two halves). Vocabulary
and priors use every text. One result per (source fingerprint, target fingerprint, encoder, settings) is cached
as a one-row Parquet file under ``<results-dir>/shift/`` (atomic; the directory reads as one
Parquet table), so a re-run costs only loading the data to fingerprint it.

This module needs no torch: only a cache miss imports :mod:`shiftbench.modeling.embed`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shiftbench.core.atomic import write_atomic
from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.overlap import normalise_text
from shiftbench.tasks import get_task

SHIFT_SCHEMA_VERSION = 1
SHIFT_DIR = "shift"
DEFAULT_ENCODER = "minilm-l6"
SAMPLE_SIZE = 1000  # texts per side for MMD and PAD (2,000 embeddings: ~20 s on 2 idle CPU cores)
N_PERMUTATIONS = 500  # p-value resolution 1/501
CV_FOLDS = 5
_WORD = re.compile(r"\w+")


# --------------------------------------------------------------------------- statistics


def words(text: str) -> list[str]:
    """
    >>> words("RT @Trader: $AAPL up 5%! https://t.co/x")
    ['rt', 'aapl', 'up', '5']
    """
    return _WORD.findall(normalise_text(text))


@dataclass(frozen=True)
class Vocabulary:
    source_types: int
    target_types: int
    jaccard: float  # |Vs & Vt| / |Vs | Vt| over word types
    target_oov_rate: float  # share of target word tokens whose type is not in the source vocabulary
    target_type_oov_rate: float  # share of target word types not in the source vocabulary


def vocabulary(source_texts: Sequence[str], target_texts: Sequence[str]) -> Vocabulary:
    src = set()
    for t in source_texts:
        src.update(words(t))
    tgt = Counter(w for t in target_texts for w in words(t))
    union = src | tgt.keys()
    tokens = sum(tgt.values())
    oov_tokens = sum(c for w, c in tgt.items() if w not in src)
    return Vocabulary(
        source_types=len(src),
        target_types=len(tgt),
        jaccard=len(src & tgt.keys()) / len(union) if union else 1.0,
        target_oov_rate=oov_tokens / tokens if tokens else 0.0,
        target_type_oov_rate=sum(w not in src for w in tgt) / len(tgt) if tgt else 0.0,
    )


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx, yy = (x * x).sum(1), (y * y).sum(1)
    return np.maximum(xx[:, None] + yy[None, :] - 2.0 * x @ y.T, 0.0)


def median_bandwidth(z: np.ndarray) -> float:
    """sigma = median pairwise Euclidean distance (the median heuristic)."""
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), k=1)])
    med = float(np.median(d)) if d.size else 1.0
    return med if med > 0 else 1.0


@dataclass(frozen=True)
class MMDResult:
    mmd2: float  # unbiased estimate; can be slightly negative when there is no shift
    p_value: float  # permutation test, (1 + #perm >= observed) / (1 + n_permutations)
    bandwidth: float


def mmd2_test(
    x: np.ndarray, y: np.ndarray, n_permutations: int = N_PERMUTATIONS, seed: int = 0, bandwidth: float | None = None
) -> MMDResult:
    """Unbiased MMD^2 with a Gaussian kernel exp(-|a-b|^2 / (2 sigma^2)) and its permutation
    p-value. All permutations reuse one pooled kernel matrix: with s_p the +-1 assignment, the
    within-sample sums are quadratic forms of K with zeroed diagonal."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ShiftbenchError(f"MMD needs at least 2 examples per side, got {n} and {m}")
    z = np.concatenate([x, y]).astype(np.float64)
    sigma = median_bandwidth(z) if bandwidth is None else bandwidth
    k = np.exp(-_sq_dists(z, z) / (2 * sigma**2))
    np.fill_diagonal(k, 0.0)
    rng = np.random.default_rng(seed)
    assign = np.zeros((n_permutations + 1, n + m), dtype=bool)  # row 0: the observed split
    assign[0, :n] = True
    for p in range(1, n_permutations + 1):
        assign[p, rng.permutation(n + m)[:n]] = True
    a = assign.astype(np.float64)
    ka = a @ k  # (P, N): row sums of K over each permutation's X side
    kxx = (ka * a).sum(1)
    kyy = ((k.sum(1)[None, :] - ka) * (1 - a)).sum(1)
    kxy = (ka * (1 - a)).sum(1)
    stat = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    p_value = (1 + np.count_nonzero(stat[1:] >= stat[0])) / (1 + n_permutations)
    return MMDResult(float(stat[0]), float(p_value), float(sigma))


def _fit_logreg(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """L2-regularised logistic regression (intercept unpenalised) by L-BFGS; weights (d + 1,)."""
    from scipy import optimize, special  # imported here: a cached re-run never needs them (~0.5 s of import)

    xb = np.hstack([x, np.ones((len(x), 1))])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ w
        nll = np.logaddexp(0.0, z) - y * z
        g = xb.T @ (special.expit(z) - y) / len(y)
        pen = w.copy()
        pen[-1] = 0.0
        return float(nll.mean() + 0.5 * l2 * pen @ pen), g + l2 * pen

    res = optimize.minimize(
        loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 200, "ftol": 1e-7}
    )  # an error rate needs no tighter optimum
    return res.x


def domain_classifier_error(
    x: np.ndarray, y: np.ndarray, folds: int = CV_FOLDS, seed: int = 0, l2: float = 1e-2
) -> float:
    """Cross-validated error of a linear classifier telling ``x`` (domain 0) from ``y`` (domain 1);
    stratified folds with a fixed seed."""
    data = np.concatenate([x, y]).astype(np.float64)
    dom = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    rng = np.random.default_rng(seed)
    fold = np.empty(len(dom), dtype=np.int64)
    for d in (0, 1):
        idx = rng.permutation(np.flatnonzero(dom == d))
        fold[idx] = np.arange(len(idx)) % folds
    wrong = 0
    for f in range(folds):
        train, test = fold != f, fold == f
        w = _fit_logreg(data[train], dom[train], l2)
        pred = (data[test] @ w[:-1] + w[-1]) > 0
        wrong += int(np.count_nonzero(pred != dom[test].astype(bool)))
    return wrong / len(dom)


def proxy_a_distance(error: float) -> float:
    """2 (1 - 2 err), clipped at 0 (a classifier worse than chance says "indistinguishable")."""
    return max(0.0, 2.0 * (1.0 - 2.0 * error))


def prior_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Total-variation distance between two label distributions, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(p, dtype=float) - np.asarray(q, dtype=float)).sum())


# --------------------------------------------------------------------------- one data pair


@dataclass(frozen=True)
class ShiftMeasures:
    """One row of the shift table (see the module docstring for each measure)."""

    source: str
    target: str
    source_fingerprint: str
    target_fingerprint: str
    n_source: int  # source train texts
    n_target: int  # target test texts
    source_types: int
    target_types: int
    vocab_jaccard: float
    target_oov_rate: float
    target_type_oov_rate: float
    label_space: tuple[str, ...]
    source_priors: tuple[float, ...]
    target_priors: tuple[float, ...] | None
    label_prior_tv: float | None
    label_prior_method: str  # "labels" (true target labels), "estimated" or "none"
    encoder: str
    encoder_sha256: str
    sample_size: int  # texts per side in MMD / PAD (the source-vs-source baseline: two halves of it)
    seed: int
    mmd2: float
    mmd2_p_value: float
    mmd2_baseline: float  # source half vs source half
    mmd2_baseline_p_value: float
    kernel_bandwidth: float
    n_permutations: int
    pad: float
    pad_baseline: float
    domain_classifier_error: float
    seconds: float  # wall time of the computation (not of a cached read)
    created_at: datetime
    schema_version: int = SHIFT_SCHEMA_VERSION


SHIFT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("target", pa.string()),
        ("source_fingerprint", pa.string()),
        ("target_fingerprint", pa.string()),
        ("n_source", pa.int64()),
        ("n_target", pa.int64()),
        ("source_types", pa.int64()),
        ("target_types", pa.int64()),
        ("vocab_jaccard", pa.float64()),
        ("target_oov_rate", pa.float64()),
        ("target_type_oov_rate", pa.float64()),
        ("label_space", pa.list_(pa.string())),
        ("source_priors", pa.list_(pa.float64())),
        ("target_priors", pa.list_(pa.float64())),
        ("label_prior_tv", pa.float64()),
        ("label_prior_method", pa.string()),
        ("encoder", pa.string()),
        ("encoder_sha256", pa.string()),
        ("sample_size", pa.int64()),
        ("seed", pa.int64()),
        ("mmd2", pa.float64()),
        ("mmd2_p_value", pa.float64()),
        ("mmd2_baseline", pa.float64()),
        ("mmd2_baseline_p_value", pa.float64()),
        ("kernel_bandwidth", pa.float64()),
        ("n_permutations", pa.int64()),
        ("pad", pa.float64()),
        ("pad_baseline", pa.float64()),
        ("domain_classifier_error", pa.float64()),
        ("seconds", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("schema_version", pa.int32()),
    ],
    metadata={"shiftbench.shift_schema_version": str(SHIFT_SCHEMA_VERSION)},
)
assert SHIFT_SCHEMA.names == [f.name for f in fields(ShiftMeasures)], (
    "SHIFT_SCHEMA and ShiftMeasures must list the same columns"
)


def cache_key(
    source_fp: str, target_fp: str, encoder_sha: str, sample_size: int, seed: int, n_permutations: int
) -> str:
    blob = json.dumps([SHIFT_SCHEMA_VERSION, source_fp, target_fp, encoder_sha, sample_size, seed, n_permutations])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(results_dir: Path, key: str) -> Path:
    return Path(results_dir) / SHIFT_DIR / f"{key}.parquet"


def read_cached(path: Path) -> ShiftMeasures | None:
    """The cached row, or None when absent, unreadable or of another schema version (recomputed)."""
    try:
        table = pq.read_table(path)
        if (table.schema.metadata or {}).get(b"shiftbench.shift_schema_version") != str(SHIFT_SCHEMA_VERSION).encode():
            return None
        row = table.cast(SHIFT_SCHEMA).to_pylist()[0]
    except (OSError, ValueError, IndexError, pa.ArrowException):
        return None
    for k in ("label_space", "source_priors", "target_priors"):
        row[k] = tuple(row[k]) if row[k] is not None else None
    return ShiftMeasures(**row)


def write_cached(path: Path, m: ShiftMeasures) -> None:
    table = pa.Table.from_pylist([asdict(m)], schema=SHIFT_SCHEMA)
    write_atomic(path, lambda p: pq.write_table(table, p))


def read_shift_table(results_dir: Path) -> pa.Table:
    """Every cached shift row under ``<results-dir>/shift/`` (unreadable files are left out)."""
    rows = [r for p in sorted((Path(results_dir) / SHIFT_DIR).glob("*.parquet")) if (r := read_cached(p)) is not None]
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=SHIFT_SCHEMA)


def _priors(labels: Sequence[str], space: Sequence[str]) -> tuple[float, ...]:
    counts = Counter(labels)
    total = sum(counts[s] for s in space)
    return tuple(counts[s] / total if total else 0.0 for s in space)


def compute_measures(
    source_name: str,
    target_name: str,
    source_fp: str,
    target_fp: str,
    source_texts: Sequence[str],
    target_texts: Sequence[str],
    label_space: Sequence[str],
    source_labels: Sequence[str],
    target_labels: Sequence[str] | None,
    embed,
    encoder: str,
    encoder_sha: str,
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
    n_permutations: int = N_PERMUTATIONS,
    estimated_target_priors: Sequence[float] | None = None,
) -> ShiftMeasures:
    """Every measure for one data pair. ``embed(texts) -> (n, d)`` is the encoder (injected, so
    tests run without one); labels are canonical names (flattened tags for NER)."""
    start = time.perf_counter()
    if sample_size < 4:
        raise ShiftbenchError(f"--sample: at least 4 texts per side, got {sample_size}")
    vocab = vocabulary(source_texts, target_texts)
    src_priors = _priors(source_labels, label_space)
    if target_labels is not None:
        tgt_priors, method = _priors(target_labels, label_space), "labels"
    elif estimated_target_priors is not None:
        tgt_priors, method = tuple(float(x) for x in estimated_target_priors), "estimated"
        if len(tgt_priors) != len(label_space) or not np.isclose(sum(tgt_priors), 1.0, atol=1e-6):
            raise ShiftbenchError(
                f"estimated target priors {tgt_priors}: need {len(label_space)} values summing to 1 ({', '.join(label_space)})"
            )
    else:
        tgt_priors, method = None, "none"
    # Fixed-seed subsample of m texts per side (fewer when the data are smaller). The baseline
    # splits the source sample into two halves of m/2: embedding a third sample would cost half
    # as much again, and an unbiased MMD^2 is centred on 0 without shift at any sample size (its
    # permutation p-value is the comparable number; PAD's CV error is too).
    rng = np.random.default_rng(seed)
    m = min(sample_size, len(source_texts), len(target_texts))
    if m < 4:
        raise ShiftbenchError(
            f"{source_name} -> {target_name}: too few texts for MMD/PAD ({len(source_texts)} source, {len(target_texts)} target)"
        )
    src_idx = rng.choice(len(source_texts), m, replace=False)
    tgt_idx = rng.choice(len(target_texts), m, replace=False)
    emb = np.asarray(embed([source_texts[i] for i in src_idx] + [target_texts[i] for i in tgt_idx]), dtype=np.float64)
    src, tgt = emb[:m], emb[m:]
    half_a, half_b = src[: m // 2], src[m // 2 : 2 * (m // 2)]
    main = mmd2_test(src, tgt, n_permutations, seed)
    base = mmd2_test(half_a, half_b, n_permutations, seed, bandwidth=main.bandwidth)  # same kernel: comparable numbers
    err = domain_classifier_error(src, tgt, seed=seed)
    return ShiftMeasures(
        source=source_name,
        target=target_name,
        source_fingerprint=source_fp,
        target_fingerprint=target_fp,
        n_source=len(source_texts),
        n_target=len(target_texts),
        source_types=vocab.source_types,
        target_types=vocab.target_types,
        vocab_jaccard=vocab.jaccard,
        target_oov_rate=vocab.target_oov_rate,
        target_type_oov_rate=vocab.target_type_oov_rate,
        label_space=tuple(label_space),
        source_priors=src_priors,
        target_priors=tgt_priors,
        label_prior_tv=prior_distance(src_priors, tgt_priors) if tgt_priors else None,
        label_prior_method=method,
        encoder=encoder,
        encoder_sha256=encoder_sha,
        sample_size=m,
        seed=seed,
        mmd2=main.mmd2,
        mmd2_p_value=main.p_value,
        mmd2_baseline=base.mmd2,
        mmd2_baseline_p_value=base.p_value,
        kernel_bandwidth=main.bandwidth,
        n_permutations=n_permutations,
        pad=proxy_a_distance(err),
        pad_baseline=proxy_a_distance(domain_classifier_error(half_a, half_b, seed=seed)),
        domain_classifier_error=err,
        seconds=time.perf_counter() - start,
        created_at=datetime.now(timezone.utc),
    )


@dataclass(frozen=True)
class PairShift:
    pair: str
    measures: ShiftMeasures
    cached: bool  # read from the cache (no embedding this time)


def measure_pairs(
    pairs: Sequence[str] = (),
    registries: Sequence[str | Path] = (),
    data_dir: str | Path | None = None,
    results_dir: str | Path = "results",
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
    n_permutations: int = N_PERMUTATIONS,
    encoder: str | None = None,
) -> tuple[list[PairShift], list[str]]:
    """Shift measures of every (source, target) of ``pairs`` (default: every pair with one label
    per example -- not word-level, e.g. not NER -- whose data are present), from the cache when it has them; and, for the default
    selection, why a pair was left out (its data are not available)."""
    from shiftbench.data.datasets import DataUnavailable, load_domain
    from shiftbench.registry.catalog import load_catalog

    if Path(results_dir).exists() and not Path(results_dir).is_dir():
        raise ShiftbenchError(f"--results-dir {results_dir} exists and is not a directory")
    catalog = load_catalog(registries)
    names = list(dict.fromkeys(pairs))
    for p in names:
        catalog.pairs.get(p)  # unknown pair: one-line did-you-mean error
    chosen = names or [n for n, p in catalog.pairs.items() if not get_task(p.task).word_level]
    out: list[PairShift] = []
    unavailable: list[str] = []
    for name in chosen:
        pair = catalog.pairs.get(name)
        src_spec, tgt_specs = catalog.pair_datasets(pair)
        try:
            source = load_domain(
                src_spec, data_dir, ("train", "validation", "test")
            )  # carved exactly as the runner does
            targets = [load_domain(t, data_dir, ("test",)) for t in tgt_specs]
        except DataUnavailable as exc:
            if names:
                raise
            unavailable.append(f"pair {name!r}: {exc}")  # the default selection skips pairs whose data are absent
            continue
        for tgt in targets:
            out.append(
                measure_domains(name, source, tgt, results_dir, sample_size, seed, n_permutations, encoder, catalog)
            )
    return out, unavailable


def measure_domains(
    pair: str,
    source,
    target,
    results_dir: str | Path = "results",
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
    n_permutations: int = N_PERMUTATIONS,
    encoder: str | None = None,
    catalog=None,
) -> PairShift:
    """The measures of one loaded (source, target) :class:`~shiftbench.data.datasets.DomainData` pair, from
    the cache when present. The source must hold its train split (loaded with the runner's roles,
    so carving and fingerprint match); an unlabelled target has no label-prior distance here.
    Raises :class:`ShiftbenchError` when the encoder cannot be resolved."""
    from shiftbench.modeling.models import resolve_model
    from shiftbench.registry.catalog import load_catalog

    encoder = encoder or DEFAULT_ENCODER  # read at call time (tests swap in a tiny encoder)
    model = resolve_model(encoder, catalog if catalog is not None else load_catalog())
    key = cache_key(source.fingerprint, target.fingerprint, model.sha256, sample_size, seed, n_permutations)
    path = cache_path(Path(results_dir), key)
    cached = read_cached(path)
    if cached is not None:
        return PairShift(pair, cached, True)
    train, test = source.role("train"), target.role("test")
    flat = lambda s: s.row_labels()  # noqa: E731 - one label per example, or per word

    def embed(texts, _model=model):
        from shiftbench.modeling.embed import embed_texts

        return embed_texts(texts, _model)

    measures = compute_measures(
        source.spec.name,
        target.spec.name,
        source.fingerprint,
        target.fingerprint,
        train.plain_texts(),
        test.plain_texts(),
        source.label_names,
        flat(train),
        flat(test) if test.labelled else None,
        embed,
        encoder,
        model.sha256,
        sample_size,
        seed,
        n_permutations,
    )
    write_cached(path, measures)
    return PairShift(pair, measures, False)


_HEADER = [
    "pair",
    "target",
    "n_src",
    "n_tgt",
    "vocab J",
    "OOV tok",
    "prior TV",
    "MMD2 [p]",
    "MMD2 src/src [p]",
    "PAD",
    "PAD src/src",
    "sample",
]


def _cells(r: PairShift) -> list[str]:
    m = r.measures
    tv = (
        f"{m.label_prior_tv:.3f}" + (" (est.)" if m.label_prior_method == "estimated" else "")
        if m.label_prior_tv is not None
        else "-"
    )
    return [
        r.pair,
        m.target,
        str(m.n_source),
        str(m.n_target),
        f"{m.vocab_jaccard:.3f}",
        f"{m.target_oov_rate:.3f}",
        tv,
        f"{m.mmd2:.4f} [{m.mmd2_p_value:.3f}]",
        f"{m.mmd2_baseline:.4f} [{m.mmd2_baseline_p_value:.3f}]",
        f"{m.pad:.3f}",
        f"{m.pad_baseline:.3f}",
        str(m.sample_size),
    ]


def to_markdown(rows: Sequence[PairShift]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    return "\n".join(lines + ["| " + " | ".join(_cells(r)) + " |" for r in rows]) + "\n"


def to_text(rows: Sequence[PairShift]) -> str:
    """A fixed-width table for the terminal, one line per (pair, target)."""
    header = [*_HEADER, "cached"]
    body = [[*_cells(r), "yes" if r.cached else f"no ({r.measures.seconds:.1f} s)"] for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)

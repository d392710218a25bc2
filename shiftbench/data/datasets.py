"""Load one dataset of one domain into labelled splits, offline first.

A registry entry's splits are read from ``<data-dir>/<owner>__<name>/<config>/<split>.parquet``
with ``datasets.load_dataset("parquet", ...)``; when that directory does not exist and the Hub
is reachable, ``datasets.load_dataset(hub_id, config, revision=...)`` is used instead.

Labels are resolved by *name* (ClassLabel names, or raw values for plain columns), passed
through the entry's ``label_map`` (unmentioned labels keep their name, ``null`` drops the
example) and only then turned into ids by the pair's sorted label space. A missing validation
or test role is carved out of train: stratified, with the entry's fixed ``split_seed``.

Token classification (``task: token-classification``): the text column holds a list of words
and the label column a list of BIO tags (a list of ClassLabel ids on the Hub). ``label_map``
then maps entity *types* (``person: PER``; ``null`` turns that type's words into ``O``), and
the label space is the BIO tag list of the mapped types (``O``, ``B-LOC``, ``I-LOC``, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq

from shiftbench.core.errors import DataUnavailable, ShiftbenchError, one_line
from shiftbench.core.guards import check_regular_file, preview
from shiftbench.tasks.ner_metrics import entity_types, parse_tag
from shiftbench.registry.specs import DatasetSpec, as_plain

_FINGERPRINT_FIELDS = (
    "hub_id", "config", "revision", "text_column", "label_column", "splits",
    "label_map", "task", "split_seed", "carve_fraction",
)  # fmt: skip


TOKEN_TASK = "token-classification"
_UNLABELLED = "<unlabelled>"  # placeholder while loading (not None: None means "dropped by label_map")


@dataclass(frozen=True)
class SplitData:
    """Texts and their canonical label names, in file order (after drops and carving).

    For token classification each text is a tuple of words and each label a tuple of BIO tags
    (one per word)."""

    texts: tuple
    labels: tuple  # all None for an unlabelled dataset
    task: str = "text-classification"
    labelled: bool = True  # False: an unlabelled dataset (no label_column); it can only be a target

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_tokens(self) -> bool:
        return self.task == TOKEN_TASK

    def subset(self, idx) -> SplitData:
        return SplitData(tuple(self.texts[i] for i in idx), tuple(self.labels[i] for i in idx), self.task, self.labelled)

    def label_ids(self, label_space: tuple[str, ...]) -> np.ndarray:
        """(N,) label ids; for token classification the word tags of every example, concatenated.
        An unlabelled split has id -1 for every example (never a class id; written as null)."""
        if not self.labelled:
            return np.full(len(self.texts), -1, dtype=np.int64)
        index = {name: i for i, name in enumerate(label_space)}
        flat = (t for tags in self.labels for t in tags) if self.is_tokens else self.labels
        return np.fromiter((index[lbl] for lbl in flat), dtype=np.int64)

    def tag_ids(self, label_space: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        """Token classification: one array of tag ids per example."""
        index = {name: i for i, name in enumerate(label_space)}
        return tuple(np.fromiter((index[t] for t in tags), dtype=np.int64, count=len(tags)) for tags in self.labels)

    def label_counts(self, label_space: tuple[str, ...]) -> np.ndarray:
        """Examples per label (words per tag for token classification), in ``label_space`` order;
        zeros for an unlabelled split (no example has a known label)."""
        if not self.labelled:
            return np.zeros(len(label_space), dtype=np.int64)
        return np.bincount(self.label_ids(label_space), minlength=len(label_space))

    def plain_texts(self) -> tuple[str, ...]:
        """Each example as one string (words joined by spaces for token classification)."""
        return tuple(" ".join(t) for t in self.texts) if self.is_tokens else self.texts


def bio_tags(entity_types) -> tuple[str, ...]:
    """The BIO label space of a set of entity types: ``O`` first, then B-/I- per sorted type.

    >>> bio_tags({"PER", "LOC"})
    ('O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER')
    """
    return ("O",) + tuple(f"{p}-{t}" for t in sorted(entity_types) for p in ("B", "I"))


@dataclass(frozen=True)
class DomainData:
    spec: DatasetSpec
    splits: dict[str, SplitData]  # role -> data
    label_names: tuple[str, ...]  # sorted canonical label set over every loaded split
    fingerprint: str  # sha256 over the entry's data-defining fields and the files' bytes
    files: tuple[Path, ...]
    origin: str  # "local" or "hub"

    def role(self, role: str) -> SplitData:
        return self.splits[role]


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get("SHIFTBENCH_DATA_DIR")
    return Path(value).expanduser() if value else None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name too long for the file system
        return False


def split_path(spec: DatasetSpec, data_dir: Path, split: str) -> Path:
    return data_dir / spec.local_dirname / spec.config / f"{split}.parquet"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: nothing may be fetched from the Hub (data here, models in modeling.models)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


_HUB_PROBE: dict[str, str | None] = {}  # endpoint -> None when reachable, else why not (once per process)


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (None when it can): one TCP connect to the endpoint, 5 s at
    most. Without it an offline machine waits ~50 s in huggingface_hub's retries per dataset
    before the same failure."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _HUB_PROBE:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=5).close()
            _HUB_PROBE[endpoint] = None
        except OSError as exc:
            _HUB_PROBE[endpoint] = f"{endpoint} is unreachable ({exc.strerror or exc})"
    return _HUB_PROBE[endpoint]


def _load_split(spec: DatasetSpec, data_dir: Path | None, split: str) -> tuple[Any, Path | None]:
    """A ``datasets.Dataset`` for one split, and the local file it came from (None for the Hub)."""
    import datasets

    datasets.disable_progress_bars()
    local_dir = data_dir / spec.local_dirname if data_dir is not None else None
    if local_dir is not None and _is_dir(local_dir):
        path = split_path(spec, data_dir, split)
        if not os.path.lexists(path):
            raise ShiftbenchError(f"dataset {preview(spec.name)}: split {preview(split)} not found: {path} does not exist")
        check_regular_file(path, f"dataset {preview(spec.name)}: split {preview(split)} file")  # a FIFO or device would block the read
        # Check the file with pyarrow first: datasets would log its own multi-line complaint for
        # a broken file and cannot tell an empty split from a missing one.
        try:
            parquet = pq.ParquetFile(path)
            n_rows, columns = parquet.metadata.num_rows, parquet.schema_arrow.names
        except Exception as exc:  # ArrowInvalid, OSError, ...: the file is not usable Parquet
            reason = one_line(exc)
            raise ShiftbenchError(f"{path}: not a readable Parquet file ({preview(reason, 200)})") from None
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:  # datasets would log a multi-line traceback of its own before failing
            raise ShiftbenchError(f"{path}: duplicate column names {preview(dupes)}")
        if n_rows == 0:
            raise ShiftbenchError(f"{path}: split {preview(split)} of dataset {preview(spec.name)} is empty")
        try:
            ds = datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        except Exception as exc:  # pyarrow raises several types for a truncated/non-Parquet file
            reason = one_line(exc)
            raise ShiftbenchError(f"{path}: not a readable Parquet file ({reason})") from None
        return ds, path
    if hub_offline():
        where = f"{local_dir}" if local_dir is not None else "no data dir set (--data-dir or SHIFTBENCH_DATA_DIR)"
        raise DataUnavailable(
            f"dataset {preview(spec.name)} ({spec.hub_id}) not found locally ({where}) and the Hub is offline (HF_HUB_OFFLINE=1)"
        )
    unreachable = _hub_unreachable()
    if unreachable is not None:
        raise DataUnavailable(f"dataset {preview(spec.name)} ({spec.hub_id}) not found locally and the Hub is not reachable: {unreachable}")
    try:  # pragma: no cover - needs the network
        ds = datasets.load_dataset(spec.hub_id, spec.config, split=split, revision=spec.revision)
    except Exception as exc:  # pragma: no cover
        raise DataUnavailable(f"dataset {preview(spec.name)}: cannot load {spec.hub_id} [{spec.config}/{split}] from the Hub: {exc}") from None
    return ds, None


def _column(ds: Any, name: str) -> list[Any]:
    """One column as Python values, read through Arrow: ``ds[name]`` is a lazy ``Column`` in
    datasets >= 4 that formats one row per access (a 12k-row split took ~0.1 s to iterate and
    seconds to index; Arrow's ``to_pylist`` takes milliseconds)."""
    return ds.with_format("arrow")[name].to_pylist()


def _label_names_of(ds: Any, spec: DatasetSpec, where: str) -> list[Any]:
    """Each example's label *name*: the ClassLabel name, or the raw value for plain columns."""
    import datasets

    if spec.label_column not in ds.column_names:
        raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} not found (columns: {', '.join(ds.column_names)})")
    feature = ds.features[spec.label_column]
    raw = _column(ds, spec.label_column)
    if spec.task == TOKEN_TASK:
        inner = getattr(feature, "feature", None)  # List(ClassLabel) / Sequence(ClassLabel)
        if inner is None:
            raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} must hold a list of tags per example for token classification")
        if isinstance(inner, datasets.ClassLabel):
            return [[_class_name(inner, v, where, spec.label_column, i) for v in row] if row is not None else None
                    for i, row in enumerate(raw)]  # fmt: skip
        return [list(row) if row is not None else None for row in raw]
    if isinstance(feature, datasets.ClassLabel):
        return [_class_name(feature, v, where, spec.label_column, i) for i, v in enumerate(raw)]
    for i, value in enumerate(raw):
        if isinstance(value, (list, dict, tuple)):  # a list or struct column: no label name to match
            kind = "a struct" if isinstance(value, dict) else "a list"
            raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} row {i}: expected a label name or id, got {kind} {preview(value)}")
    return list(raw)


def _class_name(feature: Any, value: Any, where: str, column: str, row: int) -> str | None:
    """A ClassLabel id's name (None for a missing value or -1); an id outside the names is an error."""
    if value is None or value < 0:
        return None
    if value >= len(feature.names):
        raise ShiftbenchError(
            f"{where}: label column {preview(column)} row {row}: class id {value} is outside its {len(feature.names)} ClassLabel names"
        )
    return feature.names[value]


def _canonical_tags(raw_rows: list[Any], spec: DatasetSpec, where: str) -> list[tuple[str, ...]]:
    """BIO tags with entity types passed through ``label_map`` (a ``null`` type becomes ``O``)."""
    mapping = {str(k): v for k, v in (spec.label_map or {}).items()}
    out = []
    for row_no, row in enumerate(raw_rows):
        if row is None:
            raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} row {row_no}: missing tag list")
        tags = []
        for pos, tag in enumerate(row):
            if not isinstance(tag, str):
                raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} row {row_no}: tag {preview(tag)} is not a string")
            try:
                prefix, etype = parse_tag(tag, pos)
            except ValueError:
                raise ShiftbenchError(
                    f"{where}: label column {preview(spec.label_column)} row {row_no}: tag {preview(tag)} is not BIO ('O', 'B-<TYPE>', 'I-<TYPE>')"
                ) from None
            mapped = mapping.get(etype, etype) if prefix != "O" else None
            tags.append("O" if mapped is None else f"{prefix}-{mapped}")
        out.append(tuple(tags))
    return out


def _words_of(ds: Any, spec: DatasetSpec, tags: list[tuple[str, ...]], where: str) -> list[tuple[str, ...]]:
    if spec.text_column not in ds.column_names:
        raise ShiftbenchError(f"{where}: text column {preview(spec.text_column)} not found (columns: {', '.join(ds.column_names)})")
    out = []
    for i, (words, row_tags) in enumerate(zip(_column(ds, spec.text_column), tags)):
        # An empty-string word occurs in real data (BTC test): it has no sub-token and is predicted O.
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise ShiftbenchError(f"{where}: text column {preview(spec.text_column)} row {i}: expected a non-empty list of words (strings)")
        if len(words) != len(row_tags):
            raise ShiftbenchError(
                f"{where}: row {i}: {len(words)} words in {preview(spec.text_column)} but {len(row_tags)} tags in {preview(spec.label_column)}"
            )
        out.append(tuple(words))
    return out


def _canonical(raw_names: list[Any], spec: DatasetSpec, where: str) -> list[str | None]:
    mapping = spec.label_map or {}
    # YAML keys may be ints (SST-2's 0/1) or strings; match on the value and on its string form.
    lookup = {**{str(k): v for k, v in mapping.items()}, **mapping}
    out: list[str | None] = []
    for value in raw_names:
        if value is None:
            raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} has a missing value")
        if value in lookup or str(value) in lookup:
            out.append(lookup[value] if value in lookup else lookup[str(value)])
        else:
            out.append(str(value))
    return out


def _texts_of(ds: Any, spec: DatasetSpec, where: str) -> list[Any]:
    if spec.text_column not in ds.column_names:
        raise ShiftbenchError(f"{where}: text column {preview(spec.text_column)} not found (columns: {', '.join(ds.column_names)})")
    texts = _column(ds, spec.text_column)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ShiftbenchError(f"{where}: text column {preview(spec.text_column)} row {i}: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise ShiftbenchError(f"{where}: text column {preview(spec.text_column)} row {i}: empty text")
    return texts


def _carve(labels: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``range(len(labels))`` into (kept, carved), both sorted."""
    rng = np.random.default_rng(seed)
    carved: list[np.ndarray] = []
    arr = np.asarray(labels, dtype=object)
    for name in sorted(set(labels)):
        idx = np.flatnonzero(arr == name)
        take = int(round(fraction * len(idx)))
        carved.append(rng.permutation(idx)[:take])
    carved_idx = np.sort(np.concatenate(carved)) if carved else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return kept, carved_idx


def load_domain(spec: DatasetSpec, data_dir: str | Path | None, roles: tuple[str, ...]) -> DomainData:
    """Load the requested roles (train/validation/test) of one dataset, carving missing ones."""
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None and not _is_dir(data_dir):
        raise ShiftbenchError(f"data dir {data_dir} does not exist or is not a directory")
    needed = set(roles)
    carve_from_train = {r for r in needed if r not in spec.splits and r in ("validation", "test")}
    if carve_from_train and "train" not in spec.splits:
        raise ShiftbenchError(f"dataset {preview(spec.name)}: no split for role(s) {sorted(carve_from_train)} and no train split to carve them from")
    load_roles = (needed - carve_from_train) | ({"train"} if carve_from_train else set())
    for role in load_roles:
        if role not in spec.splits:
            raise ShiftbenchError(f"dataset {preview(spec.name)}: no split for role {preview(role)} (splits: {spec.splits})")

    splits: dict[str, SplitData] = {}
    files: list[Path] = []
    hub_content: dict[str, str] = {}  # split -> content hash, for data that came from the Hub
    for role in sorted(load_roles):
        split = spec.splits[role]
        ds, path = _load_split(spec, data_dir, split)
        where = str(path) if path is not None else f"{spec.hub_id}[{spec.config}/{split}]"
        if len(ds) == 0:
            raise ShiftbenchError(f"{where}: split {preview(split)} of dataset {preview(spec.name)} is empty")
        if spec.task == TOKEN_TASK:
            labels = _canonical_tags(_label_names_of(ds, spec, where), spec, where)
            texts = _words_of(ds, spec, labels, where)
        elif not spec.labelled:  # unlabelled: texts only, checked as for labelled data
            texts = _texts_of(ds, spec, where)
            labels = [_UNLABELLED] * len(texts)
        else:
            texts = _texts_of(ds, spec, where)
            labels = _canonical(_label_names_of(ds, spec, where), spec, where)
        keep = [i for i, lbl in enumerate(labels) if lbl is not None]
        if not keep:
            raise ShiftbenchError(f"{where}: every example of dataset {preview(spec.name)} was dropped by its label_map")
        kept_labels = tuple(labels[i] for i in keep) if spec.labelled else (None,) * len(keep)
        splits[role] = SplitData(tuple(texts[i] for i in keep), kept_labels, spec.task, spec.labelled)
        if path is not None:
            files.append(path)
        else:
            blob = json.dumps([list(texts), [str(x) for x in labels]], ensure_ascii=False)
            hub_content[split] = hashlib.sha256(blob.encode()).hexdigest()

    # Carve test first, then validation, each as `carve_fraction` of the original train split,
    # so FPB (train only, fraction 0.1) becomes the usual stratified 80/10/10.
    if carve_from_train:
        train = splits["train"]
        n_total = len(train)
        frac = spec.carve_fraction
        for i, role in enumerate(("test", "validation")):
            if role not in carve_from_train:
                continue
            share = frac * n_total / len(splits["train"])
            strata = list(splits["train"].labels)  # all None for an unlabelled split: one stratum
            if spec.task == TOKEN_TASK:  # stratify by the entity types a sentence mentions
                strata = ["|".join(entity_types(tags)) for tags in strata]
            kept, carved = _carve(strata, share, spec.split_seed + i)
            splits[role] = splits["train"].subset(carved)
            splits["train"] = splits["train"].subset(kept)
        if "train" not in needed:
            del splits["train"]

    if not spec.labelled:
        label_names = ()  # no labels of its own: a pair's label space comes from its source
    elif spec.task == TOKEN_TASK:
        label_names = bio_tags(entity_types(t for s in splits.values() for tags in s.labels for t in tags))
    else:
        label_names = tuple(sorted({lbl for s in splits.values() for lbl in s.labels}))
    identity = {k: as_plain(getattr(spec, k)) for k in _FINGERPRINT_FIELDS}
    identity["files"] = {p.name: file_sha256(p) for p in files} if files else {"hub": hub_content}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return DomainData(spec, splits, label_names, fingerprint, tuple(files), "local" if files else "hub")


def pair_label_space(source: DomainData, targets: list[DomainData], pair_name: str) -> tuple[str, ...]:
    """The pair's label space (sorted names); every labelled target must have exactly the
    source's labels (an unlabelled target is scored in the source's label space)."""
    for target in targets:
        if not target.spec.labelled:
            continue
        if set(target.label_names) != set(source.label_names):
            raise ShiftbenchError(
                f"pair {preview(pair_name)}: label sets differ after label_map: source {preview(source.spec.name)} has "
                f"{list(source.label_names)}, target {preview(target.spec.name)} has {list(target.label_names)}"
            )
    return source.label_names

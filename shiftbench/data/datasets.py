"""Load one dataset of one domain into labelled splits, offline first.

A registry entry's splits are read from ``<data-dir>/<owner>__<name>/<config>/<split>.parquet``
with ``datasets.load_dataset("parquet", ...)``; when that directory does not exist and the Hub
is reachable, ``datasets.load_dataset(hub_id, config, revision=...)`` is used instead.

Labels are resolved by *name* (ClassLabel names, or raw values for plain columns), passed
through the entry's ``label_map`` (unmentioned labels keep their name, ``null`` drops the
example) and only then turned into ids by the pair's sorted label space. A missing validation
or test role is carved out of train: stratified, with the entry's fixed ``split_seed``.

How a split's texts and labels are read, which label space they span and what carving
stratifies by is the dataset's task kind's (:mod:`shiftbench.tasks`): e.g. token classification
reads a list of words and a list of BIO tags per example, a text pair two text columns.
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
from shiftbench.registry.specs import DatasetSpec, as_plain
from shiftbench.tasks import TextClassification, get_task

_FINGERPRINT_FIELDS = (
    "hub_id",
    "config",
    "revision",
    "text_column",
    "label_column",
    "splits",
    "label_map",
    "task",
    "split_seed",
    "carve_fraction",
)
# Fingerprinted only when set, so adding them changed no existing dataset's fingerprint.
_OPTIONAL_FINGERPRINT_FIELDS = ("text_pair_column",)


@dataclass(frozen=True)
class SplitData:
    """Texts and their canonical label names, in file order (after drops and carving).

    What a text and a label are is the task kind's: e.g. for token classification each text is a
    tuple of words and each label a tuple of BIO tags (one per word), for a text pair each text
    is a tuple of two strings."""

    texts: tuple
    labels: tuple  # all None for an unlabelled dataset
    task: str = TextClassification.name
    labelled: bool = True  # False: an unlabelled dataset (no label_column); it can only be a target

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def kind(self):
        """The task kind (:class:`shiftbench.tasks.TaskKind`)."""
        return get_task(self.task)

    def subset(self, idx) -> SplitData:
        return SplitData(
            tuple(self.texts[i] for i in idx), tuple(self.labels[i] for i in idx), self.task, self.labelled
        )

    def label_ids(self, label_space: tuple[str, ...]) -> np.ndarray:
        """(N,) label ids of the prediction rows (for token classification the word tags of every
        example, concatenated). An unlabelled split has id -1 for every example (never a class
        id; written as null)."""
        if not self.labelled:
            return np.full(len(self.texts), -1, dtype=np.int64)
        index = {name: i for i, name in enumerate(label_space)}
        return np.fromiter((index[lbl] for lbl in self.row_labels()), dtype=np.int64)

    def row_labels(self) -> list:
        """The label name of every prediction row (example, or word), in order."""
        return list(self.kind.row_labels(self.labels))

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
        """Each example as one string (words, or the two texts of a pair, joined by spaces)."""
        kind = self.kind
        return tuple(kind.plain_text(t) for t in self.texts)


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
            raise ShiftbenchError(
                f"dataset {preview(spec.name)}: split {preview(split)} not found: {path} does not exist"
            )
        check_regular_file(
            path, f"dataset {preview(spec.name)}: split {preview(split)} file"
        )  # a FIFO or device would block the read
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
        raise DataUnavailable(
            f"dataset {preview(spec.name)} ({spec.hub_id}) not found locally and the Hub is not reachable: {unreachable}"
        )
    try:  # pragma: no cover - needs the network
        ds = datasets.load_dataset(spec.hub_id, spec.config, split=split, revision=spec.revision)
    except Exception as exc:  # pragma: no cover
        raise DataUnavailable(
            f"dataset {preview(spec.name)}: cannot load {spec.hub_id} [{spec.config}/{split}] from the Hub: {exc}"
        ) from None
    return ds, None


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
        raise ShiftbenchError(
            f"dataset {preview(spec.name)}: no split for role(s) {sorted(carve_from_train)} and no train split to carve them from"
        )
    load_roles = (needed - carve_from_train) | ({"train"} if carve_from_train else set())
    for role in load_roles:
        if role not in spec.splits:
            raise ShiftbenchError(
                f"dataset {preview(spec.name)}: no split for role {preview(role)} (splits: {spec.splits})"
            )

    kind = get_task(spec.task)
    splits: dict[str, SplitData] = {}
    files: list[Path] = []
    hub_content: dict[str, str] = {}  # split -> content hash, for data that came from the Hub
    for role in sorted(load_roles):
        split = spec.splits[role]
        ds, path = _load_split(spec, data_dir, split)
        where = str(path) if path is not None else f"{spec.hub_id}[{spec.config}/{split}]"
        if len(ds) == 0:
            raise ShiftbenchError(f"{where}: split {preview(split)} of dataset {preview(spec.name)} is empty")
        texts, labels = kind.read(ds, spec, where)  # unlabelled: a placeholder label per example
        keep = [i for i, lbl in enumerate(labels) if lbl is not None]
        if not keep:
            raise ShiftbenchError(
                f"{where}: every example of dataset {preview(spec.name)} was dropped by its label_map"
            )
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
            # all None for an unlabelled split: one stratum
            strata = [kind.stratum(lbl) if lbl is not None else None for lbl in splits["train"].labels]
            kept, carved = _carve(strata, share, spec.split_seed + i)
            splits[role] = splits["train"].subset(carved)
            splits["train"] = splits["train"].subset(kept)
        if "train" not in needed:
            del splits["train"]

    # No labels of its own (an unlabelled target): a pair's label space comes from its source.
    label_names = kind.label_space(lbl for s in splits.values() for lbl in s.labels) if spec.labelled else ()
    identity = {k: as_plain(getattr(spec, k)) for k in _FINGERPRINT_FIELDS}
    identity.update(
        {k: as_plain(getattr(spec, k)) for k in _OPTIONAL_FINGERPRINT_FIELDS if getattr(spec, k) is not None}
    )
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

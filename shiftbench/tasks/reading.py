"""Reading columns of a loaded split (a ``datasets.Dataset``) with one-line errors that name the
file, the column, the row and the value; the task kinds build their ``read`` from these."""

from __future__ import annotations

from typing import Any

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview

UNLABELLED = "<unlabelled>"  # placeholder while loading (not None: None means "dropped by label_map")


def column(ds: Any, name: str) -> list[Any]:
    """One column as Python values, read through Arrow: ``ds[name]`` is a lazy ``Column`` in
    datasets >= 4 that formats one row per access (a 12k-row split took ~0.1 s to iterate and
    seconds to index; Arrow's ``to_pylist`` takes milliseconds)."""
    return ds.with_format("arrow")[name].to_pylist()


def check_column(ds: Any, name: str, what: str, where: str) -> None:
    if name not in ds.column_names:
        raise ShiftbenchError(
            f"{where}: {what} column {preview(name)} not found (columns: {', '.join(ds.column_names)})"
        )


def class_name(feature: Any, value: Any, where: str, column_name: str, row: int) -> str | None:
    """A ClassLabel id's name (None for a missing value or -1); an id outside the names is an error."""
    if value is None or value < 0:
        return None
    if value >= len(feature.names):
        raise ShiftbenchError(
            f"{where}: label column {preview(column_name)} row {row}: class id {value} is outside its {len(feature.names)} ClassLabel names"
        )
    return feature.names[value]


def label_names(ds: Any, spec: Any, where: str) -> list[Any]:
    """Each example's label *name*: the ClassLabel name, or the raw value for plain columns."""
    import datasets

    check_column(ds, spec.label_column, "label", where)
    feature = ds.features[spec.label_column]
    raw = column(ds, spec.label_column)
    if isinstance(feature, datasets.ClassLabel):
        return [class_name(feature, v, where, spec.label_column, i) for i, v in enumerate(raw)]
    for i, value in enumerate(raw):
        if isinstance(value, (list, dict, tuple)):  # a list or struct column: no label name to match
            kind = "a struct" if isinstance(value, dict) else "a list"
            raise ShiftbenchError(
                f"{where}: label column {preview(spec.label_column)} row {i}: expected a label name or id, got {kind} {preview(value)}"
            )
    return list(raw)


def canonical(raw_names: list[Any], spec: Any, where: str) -> list[str | None]:
    """Label names passed through the entry's ``label_map`` (None: dropped)."""
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


def texts(ds: Any, name: str, where: str) -> list[str]:
    """A column of non-empty strings."""
    check_column(ds, name, "text", where)
    values = column(ds, name)
    for i, t in enumerate(values):
        if not isinstance(t, str):
            raise ShiftbenchError(
                f"{where}: text column {preview(name)} row {i}: expected a string, got {type(t).__name__}"
            )
        if not t.strip():
            raise ShiftbenchError(f"{where}: text column {preview(name)} row {i}: empty text")
    return values


def labels(ds: Any, spec: Any, where: str, n: int) -> list[str | None]:
    """One canonical label name per example (None: dropped by ``label_map``); the placeholder
    for every example of an unlabelled dataset."""
    if not spec.labelled:
        return [UNLABELLED] * n
    return canonical(label_names(ds, spec, where), spec, where)


def truncate(seq: list, max_length: int, keep_last: bool) -> list:
    """``seq`` cut to ``max_length``, keeping the final special token (e.g. [SEP] / EOS) the model
    was trained to see when ``keep_last``."""
    if len(seq) <= max_length:
        return seq
    return seq[: max_length - 1] + seq[-1:] if keep_last else seq[:max_length]

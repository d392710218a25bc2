"""Build frozen dataclass records from YAML mappings, with one-line errors.

Every registry entry and protocol goes through :func:`from_mapping`: unknown keys get a
did-you-mean, missing required keys and wrong types name the file, the entry and the field.
Supported annotations are the small set the records use: ``str``, ``int``, ``float``,
``bool``, ``tuple[str, ...]``, ``tuple[float, ...]``, ``dict``, and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Protocol, TypeVar

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview


class _Dataclass(Protocol):  # what dataclasses.fields accepts (typeshed's DataclassInstance)
    __dataclass_fields__: ClassVar[dict[str, Any]]


R = TypeVar("R", bound=_Dataclass)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ShiftbenchError(f"{where}: expected a list of {_type_name(elem)}, got {preview(value)}")
        return tuple(_coerce(v, elem, where) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ShiftbenchError(f"{where}: expected a mapping, got {preview(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ShiftbenchError(f"{where}: expected true or false, got {preview(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShiftbenchError(f"{where}: expected an integer, got {preview(value)}")
        return value
    if tp is float:
        # YAML reads "2e-5" (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ShiftbenchError(f"{where}: expected a number, got {preview(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ShiftbenchError(f"{where}: expected a finite number, got {preview(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            raise ShiftbenchError(f"{where}: expected a finite number, got an integer too large for a float") from None
        if not math.isfinite(number):
            raise ShiftbenchError(f"{where}: expected a finite number, got {preview(value)}")
        return number
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise ShiftbenchError(f"{where}: expected a non-empty string, got {preview(value)}")
        return value
    raise TypeError(f"unsupported annotation {tp!r}")  # a programming error, not user input


def from_mapping(cls: type[R], raw: Any, where: str, **fixed: Any) -> R:
    """Validate ``raw`` against the dataclass ``cls`` and build it.

    ``where`` prefixes every error (e.g. ``"my.yaml: dataset 'fpb'"``); ``fixed`` supplies
    fields that do not come from the mapping (such as the entry's name).
    """
    if not isinstance(raw, dict):
        raise ShiftbenchError(f"{where}: expected a mapping of fields, got {preview(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}
    for key in raw:
        if key not in fields:
            raise ShiftbenchError(f"{where}: unknown field {preview(key)}{did_you_mean(str(key), fields)}")
    values: dict[str, Any] = dict(fixed)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                raise ShiftbenchError(f"{where}: missing required field {preview(name)}")
            continue
        values[name] = _coerce(raw[name], hints[name], f"{where}: field {preview(name)}")
    try:
        return cls(**values)
    except ShiftbenchError as exc:
        raise ShiftbenchError(f"{where}: {exc}") from None

"""Bounds on what a user can hand shiftbench: quoted values, files read, paths written.

One home for the checks every reader and writer shares, so that a hostile input (a YAML alias
bomb, a weight file that is a FIFO or a symlink to ``/dev/zero``, ``--out`` pointing at an
immutable run file) fails in one line before anything is read or written:

- :func:`preview`: a short, cut ``repr`` of any value for an error message. Plain ``repr`` of a
  value built from YAML aliases expands every alias (a 464-byte file gave a 351 MB line);
  this walks at most ``limit`` characters' worth of the value.
- :func:`check_regular_file` / :func:`read_text_bounded`: a file is a regular file (after
  symlinks) of bounded size before a byte of it is read; a device or FIFO would make a read
  block or never end.
- :func:`check_path_component`: a registry value used as a path component cannot leave its
  directory (``..``, separators, absolute paths).
- :func:`check_output_dir` / :func:`check_output_file`: nothing is written at the file-system
  root or into the directories of immutable run and prediction files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.preview import preview  # also re-exported: every reader quotes values via guards.preview

MiB = 1 << 20
# Registry and protocol files are hand-written YAML of a few KiB; a cap keeps a 50 MB file from
# taking minutes to parse.
MAX_YAML_BYTES = 1 * MiB
# Directories of immutable outputs inside a results dir (results.RUNS_DIR, results.PREDICTIONS_DIR;
# named here so this module imports nothing heavy).
IMMUTABLE_DIRS = ("runs", "predictions")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: Path, what: str, max_bytes: int | None = None) -> int:
    """The size of ``path``, a regular file (symlinks followed) of at most ``max_bytes``; else a
    one-line error naming it. Only ``stat`` is called: opening a FIFO would block."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ShiftbenchError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ShiftbenchError(
            f"cannot read {what} {preview(str(path), 200)}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        target = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise ShiftbenchError(f"{what} {path} is {_kind(st.st_mode)}{target}, not a regular file; refusing to read it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ShiftbenchError(f"{what} {path} is {st.st_size} bytes, more than the {max_bytes} bytes allowed")
    return st.st_size


def read_bytes_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before and while reading:
    the file may grow in between)."""
    check_regular_file(path, what, max_bytes)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ShiftbenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ShiftbenchError(f"{what} {path} is more than the {max_bytes} bytes allowed")
    return data


def read_text_bounded(path: Path, what: str, max_bytes: int) -> str:
    data = read_bytes_bounded(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShiftbenchError(f"cannot read {what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def check_path_component(value: str, where: str) -> str:
    """``value`` names one entry inside a directory (a data split, a dataset config, a shard
    file): not empty, no ``.``/``..``, no path separator, no NUL; else an error at ``where``
    (e.g. "reg.yaml: dataset 'x': field 'config'")."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or value != value.strip()
    ):
        raise ShiftbenchError(
            f"{where}: {preview(value)} is not a plain name (no '/', '..' or surrounding space); it must stay inside its directory"
        )
    return value


def check_output_dir(path: Path, flag: str) -> Path:
    """A directory shiftbench writes into (a results dir): not the file-system root."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ShiftbenchError(f"{flag} {preview(str(path), 200)}: {exc}") from None
    if resolved == Path(resolved.anchor):
        raise ShiftbenchError(f"{flag} {path}: refusing to use the file-system root as a results dir")
    return path


def check_output_file(out: Path, results_dir: Path, flag: str) -> Path:
    """``out`` (a derived file: leaderboard, report) may not land among the immutable run and
    prediction files of ``results_dir``, nor be a directory."""
    out = Path(out)
    try:
        target = out.resolve()
        roots = [(Path(results_dir) / d).resolve() for d in IMMUTABLE_DIRS]
    except (OSError, ValueError, RuntimeError) as exc:
        raise ShiftbenchError(f"{flag} {preview(str(out), 200)}: {exc}") from None
    for root in roots:
        if target == root or root in target.parents:
            raise ShiftbenchError(f"{flag} {out}: inside {root}, which holds immutable run files; write it elsewhere")
    if target.is_dir():
        raise ShiftbenchError(f"{flag} {out} is a directory; give a file name")
    if target == Path(target.anchor):
        raise ShiftbenchError(f"{flag} {out}: not a file")
    return out

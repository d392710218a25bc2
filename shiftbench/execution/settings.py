"""Every option of a run, declared once.

:class:`RunRequest` holds what the user asked for, before anything is resolved: each field is
one option with its type, its default, its help text and its command-line flag. The ``run``
subcommand's flags are built from it (:func:`add_run_arguments`, read back by
:meth:`RunRequest.from_cli`), ``shiftbench.run(...)`` takes the same keywords, and its docstring
lists them from here (:func:`options_doc`); a test checks that the three agree.

:func:`shiftbench.execution.config.resolve_settings` turns a request into the resolved
:class:`~shiftbench.execution.config.RunSettings` (flags, then the suite's defaults, then
environment variables, then built-in defaults).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview

if TYPE_CHECKING:  # only for the annotation: building the CLI parser reads no protocol
    from shiftbench.registry.protocol import Protocol

_EXCLUSIVE = "exclusive"  # metadata key: options sharing a value are mutually exclusive on the command line


def cli(flag: str, help: str, exclusive: str | None = None, **argparse_kwargs: Any) -> dict[str, Any]:
    """A run option's field metadata: its command-line flag and help, and how argparse reads it
    (``action``, ``type``, ``choices``, ``metavar``)."""
    return {"flag": flag, "help": help, "argparse": argparse_kwargs, _EXCLUSIVE: exclusive}


@dataclass(frozen=True)
class RunRequest:
    """What a run was asked to do, as given (CLI flags or ``shiftbench.run`` keywords)."""

    # What to run.
    suite: str | None = field(
        default=None, metadata=cli("--suite", "named set of pairs (default: default)", exclusive="what")
    )
    pairs: Sequence[str] = field(
        default=(), metadata=cli("--pair", "pair name (repeatable)", exclusive="what", action="append")
    )
    models: Sequence[str] = field(
        default=(), metadata=cli("--model", "alias, local dir or Hub id (repeatable)", action="append")
    )
    seeds: str | Sequence[int] | None = field(
        default=None, metadata=cli("--seeds", "comma-separated seeds, e.g. 0,1,2")
    )
    protocol: str | Protocol | None = field(
        default=None,
        metadata=cli(
            "--protocol",
            "a built-in protocol (standard-v2, standard, quick, ...) or a protocol YAML file "
            "(default: the suite's, else standard-v2)",
        ),
    )
    precision: str | None = field(
        default=None, metadata=cli("--precision", "override the protocol's precision (fp32 or bf16)")
    )
    # Where things are.
    registries: Sequence[str | Path] = field(
        default=(),
        metadata=cli(
            "--registry",
            "extra registry YAML (repeatable; also $SHIFTBENCH_REGISTRY, path-separated)",
            action="append",
            metavar="FILE",
        ),
    )
    data_dir: str | Path | None = field(
        default=None, metadata=cli("--data-dir", "local dataset mirror (default: $SHIFTBENCH_DATA_DIR)")
    )
    results_dir: str | Path | None = field(
        default=None, metadata=cli("--results-dir", "where run files go (default: results/)")
    )
    cache_dir: str | Path | None = field(
        default=None,
        metadata=cli(
            "--cache-dir",
            "cache of fine-tuned weights, checkpoints and tokens (default: $SHIFTBENCH_CACHE_DIR or ~/.cache/shiftbench)",
        ),
    )
    device: str | None = field(default=None, metadata=cli("--device", "cpu or cuda (default: cuda when available)"))
    # How.
    dry_run: bool = field(
        default=False,
        metadata=cli("--dry-run", "print the plan (what trains, what is done) and stop", action="store_true"),
    )
    eval_only: bool = field(
        default=False,
        metadata=cli(
            "--eval-only",
            "score already fine-tuned checkpoints (--model DIR with a head over the pair's labels) without training",
            action="store_true",
        ),
    )
    dedup: bool = field(
        default=False,
        metadata=cli(
            "--dedup", "drop target test texts that also occur in the source train split", action="store_true"
        ),
    )
    executor: str = field(
        default="local",
        metadata=cli(
            "--executor", "run fine-tunes here, or as one Ray task per (model, source, seed)", choices=["local", "ray"]
        ),
    )
    workers: int = field(
        default=1,
        metadata=cli(
            "--workers",
            "local executor only: fine-tunes in N processes, each with cores/N torch threads "
            "unless SHIFTBENCH_NUM_THREADS is set",
            type=int,
            metavar="N",
        ),
    )
    skip_claimed: bool = field(
        default=False,
        metadata=cli(
            "--skip-claimed",
            "leave a fine-tune that another process on the results dir has claimed to it instead of "
            "waiting for it (lanes sharing a board; a run without the flag finishes what is left)",
            action="store_true",
        ),
    )
    ray_address: str | None = field(
        default=None, metadata=cli("--address", "Ray cluster address (default: start a local cluster)")
    )
    cpus_per_task: int = field(
        default=1, metadata=cli("--cpus-per-task", "Ray CPUs per task (also its torch threads)", type=int)
    )
    gpus_per_task: float = field(default=0.0, metadata=cli("--gpus-per-task", "Ray GPUs per task", type=float))
    # Safety.
    trust_remote_code: bool = field(
        default=False,
        metadata=cli("--trust-remote-code", "allow a checkpoint's custom code to run", action="store_true"),
    )
    allow_pickle: bool = field(
        default=False, metadata=cli("--allow-pickle", "allow pickle-based weights (.bin/.pt)", action="store_true")
    )

    def __post_init__(self) -> None:
        # Lists become tuples (the request is frozen); a bare string is not a list of names.
        for name in ("pairs", "models", "registries"):
            object.__setattr__(self, name, _names(name, getattr(self, name)))
        if self.seeds is not None and not isinstance(self.seeds, str):
            object.__setattr__(self, "seeds", _names("seeds", self.seeds, kind="integers"))

    @classmethod
    def from_options(cls, **options: Any) -> RunRequest:
        """From keywords, refusing an unknown one in one line (``shiftbench.api.make_plan``)."""
        known = option_names()
        for name in options:
            if name not in known:
                raise ShiftbenchError(f"unknown run option {preview(name)}{did_you_mean(name, known)}")
        return cls(**options)

    @classmethod
    def from_cli(cls, args: argparse.Namespace) -> RunRequest:
        """From the ``run`` subcommand's parsed flags (see :func:`add_run_arguments`)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _names(name: str, value: Any, kind: str = "names") -> tuple:
    if isinstance(value, (str, bytes)):
        raise ShiftbenchError(f"{name}: expected a list of {kind}, got the string {preview(value)}")
    try:
        return tuple(value)
    except TypeError:
        raise ShiftbenchError(f"{name}: expected a list of {kind}, got {preview(value)}") from None


def option_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(RunRequest))


def cli_flags() -> dict[str, str]:
    """Option name -> its command-line flag."""
    return {f.name: f.metadata["flag"] for f in fields(RunRequest)}


def add_run_arguments(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """Add the flags of these options (default: all of them) to ``parser``; each flag's value lands
    under the option's name (``--pair`` -> ``args.pairs``)."""
    groups: dict[str, Any] = {}
    for f in fields(RunRequest):
        if names is not None and f.name not in names:
            continue
        meta = f.metadata
        kwargs = dict(meta["argparse"])
        default: Any = f.default  # every option has one
        if kwargs.get("action") == "append":
            default = list(default)  # argparse appends to a list
        if kwargs.get("action") != "store_true" and "choices" not in kwargs:
            kwargs.setdefault("metavar", meta["flag"].lstrip("-").replace("-", "_").upper())  # --pair PAIR, not PAIRS
        target: Any = parser
        if meta[_EXCLUSIVE] is not None:
            if meta[_EXCLUSIVE] not in groups:
                groups[meta[_EXCLUSIVE]] = parser.add_mutually_exclusive_group()
            target = groups[meta[_EXCLUSIVE]]
        target.add_argument(meta["flag"], dest=f.name, default=default, help=meta["help"], **kwargs)


def options_doc(indent: str = "    ") -> str:
    """The options as a docstring section (``shiftbench.run`` and ``make_plan`` carry it)."""
    lines = []
    for f in fields(RunRequest):
        default = "()" if f.default == () else repr(f.default)
        head = f"{f.name}: {f.type} = {default}  ({f.metadata['flag']})"
        lines.append(indent + head)
        lines += textwrap.wrap(f.metadata["help"], 96, initial_indent=indent * 2, subsequent_indent=indent * 2)
    return "\n".join(lines) + "\n"

"""shiftbench: how much does a checkpoint lose when the text moves to another domain?

Fine-tune a pretrained checkpoint on a source domain under one versioned protocol, pick the
checkpoint on source validation data only, then score the source test split (in-domain, ID)
and every target test split (out-of-domain, OOD). The difference is the generalization gap.

The Python API is what the CLI itself calls::

    import shiftbench
    summary = shiftbench.run(pairs=["fpb_to_tfns"], models=["minilm-l6"], protocol="quick")
"""

# Defined in core.version (the bottom layer reads them from there); re-exported here.
from shiftbench.core.version import RUNNER_VERSION, __version__


def __getattr__(name: str):
    # ``shiftbench.run`` is :func:`shiftbench.api.run` itself (its signature and docstring list every
    # option), imported on first use so that ``import shiftbench`` does not load torch.
    if name == "run":
        from shiftbench.api import run

        globals()["run"] = run
        return run
    raise AttributeError(f"module 'shiftbench' has no attribute {name!r}")


__all__ = ["__version__", "RUNNER_VERSION", "run"]

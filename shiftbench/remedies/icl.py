"""The ``icl`` remedy: few-shot in-context classification with a causal LM, no weight update.

For a (model, source, seed) the harness picks ``icl_shots`` labelled examples of the source
train split (:func:`choose_demonstrations`: balanced over labels, seeded) and scores every test
example (source test = ID, each target test = OOD) with one prompt::

    <icl_instruction, "{labels}" replaced by the label names>
    <icl_template rendered for each demonstration: {text} and {label} filled in>
    <icl_template rendered for the query up to, not including, {label}>

Each label is scored by the summed log-likelihood of its name's tokens as they follow the
prompt; the probabilities are the softmax over the labels' scores and the prediction is their
argmax. The label *name* is the verbalizer ("negative", "neutral", "positive").

Tokens. Whitespace that ends the query prompt (the space of "Label: {label}") belongs to the
label, as it does inside the demonstrations: "Label: positive" is tokenized as "Label", ":",
" positive" by byte-level BPE. Prompt and prompt+label are tokenized jointly, and a label's
scored span is what follows the tokens they share (normally exactly the prompt's tokens; a
tokenizer that merges the prompt's last characters with the label is handled too, the shared
part is then shorter).

Cost. The instruction and demonstrations are the same for every query: their keys and values
are computed once per split (a ``DynamicCache``) and copied to every batch; a batch holds only
the queries' own tokens (length-sorted, right-padded, positions continuing after the prefix)
and reads the next-token distribution at each query's last token, which scores every
single-token label at once. Labels of several tokens get a second, short pass over their
remaining tokens that reuses the batch's cache. Only the last position's logits are computed.

Length. A query text is cut to ``max_length`` tokens. When the prefix plus the longest possible
query would not fit the model's positions, the demonstration texts (never the query) are cut
to the largest equal token budget that fits.

Calibration. Small LMs prefer some label names whatever the text (SmolLM2-135M, 8-shot on FPB,
gives "neutral" ~2 % probability on every query and never predicts it). With ``icl_calibrate``
(contextual calibration, Zhao et al. 2021) the same prompt is also scored with the content-free
texts of :data:`CONTENT_FREE`; their mean label probabilities ``p_cf`` estimate that bias and
every query's label probabilities are divided by them and renormalised (in log space:
``loglik - log p_cf``), so a content-free text would get uniform probabilities.

Protocol fields that configure fine-tuning (learning rates, epochs, batch size, optimizer,
schedule, selection metric, max steps) do not apply and are ignored; ``max_length``,
``eval_batch_size`` (queries per batch, at most) and ``precision`` do.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shiftbench.core import console
from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.datasets import DomainData, SplitData
from shiftbench.modeling.models import LoadOptions, ResolvedModel, check_causal_lm
from shiftbench.registry.protocol import Protocol
from shiftbench.remedies.base import Dependency, Job, Remedy, register_remedy
from shiftbench.tasks import TextClassification

if TYPE_CHECKING:  # annotations only: torch is imported when a model is prompted, not with this module
    import torch

    from shiftbench.modeling.device import Runtime
    from shiftbench.training.evaluation import Predictions

_SLOT = re.compile(r"\{text\}|\{label\}")
# Slack, in tokens, for merges at the joins between template and text when sizing the prompt.
_JOIN_SLACK = 8
# Memory for the copies of the prefix cache in one batch; the batch shrinks to stay under it.
CACHE_BUDGET_BYTES = 512 * 2**20
_CHUNK = 512  # queries tokenized per call
PROGRESS_SECONDS = 60.0


# --------------------------------------------------------------------------- demonstrations


def choose_demonstrations(
    train: SplitData, label_space: Sequence[str], k: int, seed: int
) -> tuple[tuple[str, str], ...]:
    """``k`` (text, label) examples of ``train``, as balanced over labels as the data allows.

    Round-robin over the labels (their order drawn from the seed, so which labels get one more
    example when ``k`` is not a multiple varies with the seed), random within a label, then the
    chosen examples in a seeded random order. Deterministic for a seed.

    >>> split = SplitData(tuple("abcdefgh"), ("neg",) * 6 + ("pos",) * 2)
    >>> demos = choose_demonstrations(split, ("neg", "pos"), 4, seed=0)
    >>> sorted(label for _, label in demos)
    ['neg', 'neg', 'pos', 'pos']
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(train.labels, dtype=object)
    pools = {lbl: list(rng.permutation(np.flatnonzero(labels == lbl))) for lbl in label_space}
    order = [lbl for lbl in label_space if pools[lbl]]
    order = [order[i] for i in rng.permutation(len(order))]
    chosen: list[int] = []
    while len(chosen) < k and any(pools[lbl] for lbl in order):
        for lbl in order:
            if len(chosen) < k and pools[lbl]:
                chosen.append(int(pools[lbl].pop(0)))
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return tuple((train.texts[i], train.labels[i]) for i in chosen)


# --------------------------------------------------------------------------- text


def render(template: str, text: str, label: str | None = None) -> str:
    """``template`` with ``{text}`` and ``{label}`` filled in; ``label=None``: cut just before the
    first ``{label}`` (a query). Braces inside the text are kept as they are.

    >>> render("Text: {text}\\nLabel: {label}\\n\\n", "up {label} 5 %", "positive")
    'Text: up {label} 5 %\\nLabel: positive\\n\\n'
    >>> render("Text: {text}\\nLabel: {label}\\n\\n", "up 5 %")
    'Text: up 5 %\\nLabel: '
    """
    out, pos = [], 0
    for m in _SLOT.finditer(template):
        out.append(template[pos : m.start()])
        if m.group() == "{label}":
            if label is None:
                return "".join(out)
            out.append(label)
        else:
            out.append(text)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


def instruction_text(protocol: Protocol, label_space: Sequence[str]) -> str:
    return protocol.icl_instruction.replace("{labels}", ", ".join(label_space))


def query_parts(template: str, text: str, label_space: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The query prompt and, per label, the continuation that is scored after it. Trailing
    whitespace of the prompt moves into the continuations (``"Label:"`` + ``" positive"``).

    >>> query_parts("Text: {text}\\nLabel: {label}\\n\\n", "up", ("negative", "positive"))
    ('Text: up\\nLabel:', (' negative', ' positive'))
    """
    query = render(template, text)
    stripped = query.rstrip()
    space = query[len(stripped) :]
    return stripped, tuple(space + lbl for lbl in label_space)


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """Tokens the tokenizer puts before any text (a BOS), which only the sequence start gets."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def _token_ends(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Per text, the character offset where each of its tokens ends (no special tokens)."""
    try:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [[end for _, end in offsets] for offsets in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer: decode prefixes instead
        out = []
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            out.append([len(tokenizer.decode(ids[: i + 1])) for i in range(len(ids))])
        return out


def _cut(text: str, ends: list[int], n_tokens: int | None) -> str:
    if n_tokens is None or len(ends) <= n_tokens:
        return text
    return text[: ends[n_tokens - 1]].rstrip() if n_tokens > 0 else ""


def truncate_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Each text cut after its first ``max_tokens`` tokens (tokenized on its own)."""
    texts = list(texts)
    return [_cut(t, ends, max_tokens) for t, ends in zip(texts, _token_ends(tokenizer, texts))]


def max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# --------------------------------------------------------------------------- prompt


@dataclass(frozen=True)
class FewShotPrompt:
    """What is shared by every query of a (model, source, seed): the rendered prefix (instruction
    and demonstrations) and how queries are rendered."""

    prefix: str
    template: str
    label_space: tuple[str, ...]
    max_length: int  # query text tokens, at most
    demo_token_cap: int | None  # demonstration texts were cut to this many tokens (None: not cut)

    @classmethod
    def build(
        cls,
        tokenizer: Any,
        protocol: Protocol,
        label_space: Sequence[str],
        demos: Sequence[tuple[str, str]],
        positions: int | None,
    ) -> FewShotPrompt:
        """The prompt prefix for ``demos``, with demonstration texts cut when prefix + the longest
        query would exceed ``positions`` (None: no limit)."""
        label_space = tuple(label_space)
        template, instruction = protocol.icl_template, instruction_text(protocol, label_space)
        texts = [t for t, _ in demos]
        ends = _token_ends(tokenizer, texts) if texts else []

        def prefix(cap: int | None) -> str:
            return instruction + "".join(
                render(template, _cut(t, e, cap), lbl) for t, e, (_, lbl) in zip(texts, ends, demos)
            )

        def make(cap: int | None) -> FewShotPrompt:
            return cls(prefix(cap), template, label_space, protocol.max_length, cap)

        if positions is None:
            return make(None)
        head = len(_leading_special_ids(tokenizer))
        empty_query, conts = query_parts(template, "", label_space)
        longest = max(len(tokenizer(empty_query + c, add_special_tokens=False)["input_ids"]) for c in conts)
        reserve = head + protocol.max_length + longest + _JOIN_SLACK

        def fits(cap: int | None) -> bool:
            return len(tokenizer(prefix(cap), add_special_tokens=False)["input_ids"]) + reserve <= positions

        if fits(None):
            return make(None)
        lo, hi = 0, max((len(e) for e in ends), default=0)  # fits(lo) is checked below; hi does not fit
        if not fits(lo):
            raise ShiftbenchError(
                f"icl: a query of up to max_length={protocol.max_length} tokens and {len(demos)} demonstrations do not "
                f"fit the model's {positions} positions even with the demonstration texts removed; "
                "lower max_length or icl_shots, or shorten icl_instruction"
            )
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return make(lo)


@dataclass(frozen=True)
class EncodedQueries:
    """Token ids of a split under a prompt: the shared prefix (computed once), then per query the
    tokens after it and, per label, the scored span."""

    prefix_ids: np.ndarray  # (P,)
    query_ids: tuple[np.ndarray, ...]  # per query: >= 1 token after the prefix
    label_ids: tuple[tuple[np.ndarray, ...], ...]  # per query, per label: >= 1 token
    n_merged: int  # queries whose prompt tokens were not a prefix of prompt+label (shorter shared part)

    def __len__(self) -> int:
        return len(self.query_ids)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def encode_queries(tokenizer: Any, prompt: FewShotPrompt, texts: Sequence[str]) -> EncodedQueries:
    """Tokenize every query jointly with the prefix (and with each label), so the ids are exactly
    those of the full prompt, then split them into the shared prefix and the per-query rest."""
    head = np.asarray(_leading_special_ids(tokenizer), dtype=np.int64)
    prefix_full = np.concatenate(
        [head, np.asarray(tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"], dtype=np.int64)]
    )
    shared, rests, spans = [], [], []
    n_merged = 0
    for start in range(0, len(texts), _CHUNK):
        chunk = truncate_texts(tokenizer, texts[start : start + _CHUNK], prompt.max_length)
        parts = [query_parts(prompt.template, t, prompt.label_space) for t in chunk]
        prompts = tokenizer([prompt.prefix + q for q, _ in parts], add_special_tokens=False)["input_ids"]
        joints = [
            tokenizer([prompt.prefix + q + conts[c] for q, conts in parts], add_special_tokens=False)["input_ids"]
            for c in range(len(prompt.label_space))
        ]
        for i, ids in enumerate(prompts):
            full = np.concatenate([head, np.asarray(ids, dtype=np.int64)])
            with_label = [np.concatenate([head, np.asarray(j[i], dtype=np.int64)]) for j in joints]
            end = min(_common_prefix(full, w) for w in with_label)
            end = min([end] + [len(w) - 1 for w in with_label])  # every label keeps >= 1 scored token
            n_merged += end < len(full)
            if end < 1:
                raise ShiftbenchError("icl: a prompt has no token before its label to condition on; check icl_template")
            p = min(_common_prefix(prefix_full, full[:end]), end - 1)  # >= 1 query token left
            shared.append(p)
            rests.append(full[p:end])
            spans.append(tuple(w[end:] for w in with_label))
    cut = min(shared, default=len(prefix_full))
    queries = tuple(np.concatenate([prefix_full[cut:p], rest]) for p, rest in zip(shared, rests))
    return EncodedQueries(prefix_full[:cut], queries, tuple(spans), n_merged)


# --------------------------------------------------------------------------- scoring


def _cache(config: Any, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv, config=config)


def _with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The forward keyword for a KV cache: ``cache`` since transformers 5.2x (which warns on the old
    name once per process), ``past_key_values`` before."""
    return {_cache_keyword(type(model)): cache}


@functools.cache
def _cache_keyword(model_class: type) -> str:
    """Read once per model class, not on every forward of a scoring batch."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _rows_per_batch(prefix_kv: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> int:
    per_row = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in prefix_kv)
    return max(1, min(batch_size, CACHE_BUDGET_BYTES // max(per_row, 1)))


def label_logliks(
    model: Any, enc: EncodedQueries, batch_size: int, runtime: Runtime, log: Callable[[str], None] | None = None
) -> np.ndarray:
    """(N, C) summed log-likelihood of each label's span after each query's prompt, in order.
    ``log`` (optional) hears how far it got, about once a minute."""
    import torch

    with torch.inference_mode():
        return _label_logliks(model, enc, batch_size, runtime, log)


def _label_logliks(
    model: Any, enc: EncodedQueries, batch_size: int, runtime: Runtime, log: Callable[[str], None] | None
) -> np.ndarray:
    import torch

    model.eval()
    device, config = runtime.device, model.config
    n, n_labels = len(enc), (len(enc.label_ids[0]) if len(enc) else 0)
    out = np.zeros((n, n_labels), dtype=np.float64)
    if n == 0:
        return out
    P = len(enc.prefix_ids)
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    if P:
        cache = _cache(config, [])
        with runtime.autocast():
            model(
                input_ids=torch.as_tensor(enc.prefix_ids, device=device)[None],
                **_with_cache(model, cache),
                use_cache=True,
                logits_to_keep=1,
            )
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    rows = _rows_per_batch(prefix_kv, batch_size) if prefix_kv else batch_size
    lengths = np.fromiter((len(q) for q in enc.query_ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    t0 = last = time.perf_counter()
    for start in range(0, n, rows):
        idx = order[start : start + rows]
        out[idx] = _score_batch(model, enc, idx, prefix_kv, P, runtime)
        now = time.perf_counter()
        if log is not None and now - last > PROGRESS_SECONDS and start + rows < n:
            done = start + rows
            log(f"icl: {done}/{n} queries in {now - t0:.0f} s ({done / (now - t0):.2f}/s)")
            last = now
    return out


def _padded(seqs: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from shiftbench.training.batching import pad_right

    ids, mask = pad_right(seqs, pad)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _score_batch(model: Any, enc: EncodedQueries, idx: np.ndarray, prefix_kv, P: int, runtime: Runtime) -> np.ndarray:
    import torch

    device, config = runtime.device, model.config
    B = len(idx)
    ids, qmask = _padded([enc.query_ids[i] for i in idx], 0)
    ids, qmask = ids.to(device), qmask.to(device)
    qlens = qmask.sum(1)
    L = ids.shape[1]
    attn = torch.cat([torch.ones(B, P, dtype=qmask.dtype, device=device), qmask], dim=1)
    positions = (P + torch.arange(L, device=device)).expand(B, L)
    cache = _cache(config, [(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in prefix_kv])
    with runtime.autocast():
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=positions,
            **_with_cache(model, cache),
            use_cache=True,
            logits_to_keep=(qlens - 1)[:, None],
        ).logits
    logp = torch.log_softmax(logits[:, 0].float(), dim=-1)  # (B, V): the next token after each query
    spans = [enc.label_ids[i] for i in idx]
    n_labels = len(spans[0])
    first = torch.tensor([[span[c][0] for c in range(n_labels)] for span in spans], device=device)
    scores = logp.gather(1, first).double()  # (B, C)

    # Labels of several tokens: their remaining tokens, one row per (query, label), on the batch's cache.
    rest = [(b, c) for b in range(B) for c in range(n_labels) if len(spans[b][c]) > 1]
    if rest:
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        for s in range(0, len(rest), B):
            part = rest[s : s + B]
            rows = torch.tensor([b for b, _ in part], device=device)
            inp, lmask = _padded([spans[b][c][:-1] for b, c in part], 0)
            tgt, _ = _padded([spans[b][c][1:] for b, c in part], 0)
            inp, lmask, tgt = inp.to(device), lmask.to(device), tgt.to(device)
            m = inp.shape[1]
            sub = _cache(config, [(k[rows], v[rows]) for k, v in kv])
            attn2 = torch.cat([attn[rows], lmask], dim=1)
            pos2 = P + qlens[rows][:, None] + torch.arange(m, device=device)
            with runtime.autocast():
                logits2 = model(
                    input_ids=inp, attention_mask=attn2, position_ids=pos2, **_with_cache(model, sub), use_cache=True
                ).logits
            lp2 = torch.log_softmax(logits2.float(), dim=-1).gather(2, tgt[..., None])[..., 0]
            total = (lp2 * lmask).sum(1).double()
            for r, (b, c) in enumerate(part):
                scores[b, c] += total[r]
    return scores.cpu().numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# Content-free query texts for contextual calibration, as in Zhao et al. (2021).
CONTENT_FREE = ("N/A", "", "[MASK]")


def classify(
    model: Any,
    tokenizer: Any,
    prompt: FewShotPrompt,
    split: SplitData,
    batch_size: int,
    runtime: Runtime,
    calibration: np.ndarray | None = None,
) -> Predictions:
    """Predictions for every example of ``split``, in order; ``calibration``: the prompt's
    :func:`content_free_logprobs`, to calibrate with."""
    logliks = label_logliks(model, encode_queries(tokenizer, prompt, split.texts), batch_size, runtime)
    return _predictions(logliks, split, prompt, calibration)


def content_free_logprobs(model: Any, tokenizer: Any, prompt: FewShotPrompt, runtime: Runtime) -> np.ndarray:
    """(C,) log of the mean label probabilities the prompt gives the :data:`CONTENT_FREE` texts."""
    logliks = label_logliks(model, encode_queries(tokenizer, prompt, CONTENT_FREE), len(CONTENT_FREE), runtime)
    return np.log(softmax(logliks).mean(axis=0))


def calibrate(logliks: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration: divide each query's label probabilities by the content-free ones.

    >>> p_cf = np.log([0.49, 0.02, 0.49])          # the prompt's bias against label 1
    >>> query = np.log([[0.45, 0.10, 0.45]])        # label 1 five times as likely as content-free
    >>> softmax(calibrate(query, p_cf)).round(3)    # -> it wins once the bias is divided out
    array([[0.134, 0.731, 0.134]])
    """
    return logliks - content_free[None, :]


def _predictions(
    logliks: np.ndarray, split: SplitData, prompt: FewShotPrompt, calibration: np.ndarray | None = None
) -> Predictions:
    from shiftbench.training.evaluation import Predictions

    if calibration is not None:
        logliks = calibrate(logliks, calibration)
    probs = softmax(logliks).astype(np.float32)
    return Predictions(split.label_ids(prompt.label_space), probs.argmax(axis=1), probs)


# --------------------------------------------------------------------------- harness


def icl_scorer(
    job: Job, options: LoadOptions, runtime: Runtime, log: Callable[[str], None] | None = None
) -> Callable[[DomainData], Predictions]:
    """Load the causal LM once for a (model, source, seed) and return ``score(domain)``, which
    classifies the domain's test split with the job's few-shot prompt."""
    import torch

    from shiftbench.modeling.models import load_causal_lm, load_tokenizer

    log = log or console.log
    protocol = job.protocol
    tokenizer = load_tokenizer(job.model, options)
    torch.manual_seed(job.seed)  # only matters for a random_init model
    model = load_causal_lm(job.model, options).to(runtime.device)
    demos = choose_demonstrations(job.source.role("train"), job.label_space, protocol.icl_shots, job.seed)
    prompt = FewShotPrompt.build(tokenizer, protocol, job.label_space, demos, max_positions(model.config))
    cut = f", demonstration texts cut to {prompt.demo_token_cap} tokens" if prompt.demo_token_cap is not None else ""
    log(
        f"icl: {job.model.name} prompted with {len(demos)} demonstrations from {job.source.spec.name} train, seed {job.seed}{cut}"
    )
    calibration = content_free_logprobs(model, tokenizer, prompt, runtime) if protocol.icl_calibrate else None
    if calibration is not None:
        shown = ", ".join(f"{name} {p:.3f}" for name, p in zip(job.label_space, np.exp(calibration)))
        log(f"icl: contextual calibration, content-free label probabilities {shown}")

    def score(domain: DomainData) -> Predictions:
        split = domain.role("test")
        t0 = time.perf_counter()
        enc = encode_queries(tokenizer, prompt, split.texts)
        merged = f", {enc.n_merged} with label tokens merged into the prompt's" if enc.n_merged else ""
        log(
            f"icl: scoring {len(split)} {domain.spec.name} test examples after a cached prefix of {len(enc.prefix_ids)} tokens{merged}"
        )
        preds = _predictions(
            label_logliks(model, enc, protocol.eval_batch_size, runtime, log), split, prompt, calibration
        )
        secs = time.perf_counter() - t0
        log(
            f"icl: scored {len(split)} {domain.spec.name} test examples in {secs:.1f} s ({len(split) / max(secs, 1e-9):.2f}/s)"
        )
        return preds

    return score


@register_remedy("icl")
class ICL(Remedy):
    """Few-shot prompting of a causal LM: the scorer replaces fine-tuning."""

    tasks = (TextClassification.name,)  # one text per example (a prompt, an augmented sentence, soft targets per text)
    fine_tunes = False
    job_words = ("prompt (icl)", "prompt jobs (icl)")

    def check(
        self, settings: Any, pairs: Sequence[Any], models: Sequence[ResolvedModel], dependencies: Sequence[Dependency]
    ) -> None:
        """Causal LMs and text classification only, and no --eval-only; checked before any work."""
        if settings.eval_only:
            raise ShiftbenchError("--eval-only scores a fine-tuned classifier; it does not apply to the icl remedy")
        super().check(settings, pairs, models, dependencies)
        for model in models:
            check_causal_lm(model, settings.load)

    def scorer(
        self, job: Job, load: LoadOptions, runtime: Any, log: Callable[[str], None]
    ) -> Callable[[DomainData], Predictions]:
        return icl_scorer(job, load, runtime, log=log)

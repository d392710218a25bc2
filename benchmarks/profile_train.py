"""Where a training step's time goes: ``torch.profiler`` over the runner's own ``fine_tune``.

Fine-tunes ``minilm-l6`` on the FPB source (real data, protocol ``standard`` at lr 1e-4, batch
32, length-grouped batches, fused AdamW) for a few warm-up steps, then profiles ``--steps`` more,
and prints the operators by self time, grouped into

- ``matmul``: the GEMMs (linear layers forward and backward, attention products): what MFU counts;
- ``attention``: the fused scaled-dot-product attention kernels around them (softmax, masking);
- ``elementwise``: LayerNorm, GELU, dropout, residual adds, casts, copies, and their backward;
- ``embedding``: the embedding lookup and its (dense, 30k x 384) gradient;
- ``optimizer``: fused AdamW, gradient clipping, zeroing;
- ``other``: everything else (data collation, loss, scheduler, Python).

    python benchmarks/profile_train.py                # 30 profiled steps after 5 warm-up steps
    python benchmarks/profile_train.py --steps 10     # quicker

Writes ``benchmarks/results/profile_train.json`` (category seconds and shares, top operators).
The validation pass ``fine_tune`` runs after its last step is cut to 32 examples (~1 % of the
profiled time) and the model build (~0.5 s) are inside the profile window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HERE = Path(__file__).resolve().parent
CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"),
    "attention": ("scaled_dot_product", "_efficient_attention", "_flash_attention", "aten::softmax", "aten::_softmax"),
    "embedding": ("embedding",),
    "optimizer": ("adamw", "aten::_foreach", "clip_grad", "aten::norm", "aten::linalg_vector_norm", "aten::zero_"),
    "elementwise": (
        "layer_norm",
        "gelu",
        "dropout",
        "aten::add",
        "aten::mul",
        "aten::div",
        "aten::copy_",
        "aten::to",
        "aten::_to_copy",
        "aten::fill_",
        "aten::sum",
        "aten::where",
        "aten::tanh",
        "aten::native_",
        "aten::bernoulli",
        "aten::masked_fill",
        "aten::clone",
        "aten::cat",
    ),
}


def category(op: str) -> str:
    name = op.lower()
    for cat, keys in CATEGORIES.items():
        if any(k.lower() in name for k in keys):
            return cat
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="profiled optimizer steps")
    ap.add_argument("--warmup", type=int, default=5, help="steps run before profiling starts")
    ap.add_argument("--data-dir", default=os.environ.get("SHIFTBENCH_DATA_DIR"))
    ap.add_argument("--out", default=str(HERE / "results" / "profile_train.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from shiftbench.data.datasets import load_domain, pair_label_space
    from shiftbench.data.encode import encode_split
    from shiftbench.modeling.device import make_runtime
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog
    from shiftbench.registry.protocol import load_protocol
    from shiftbench.training.train import fine_tune

    runtime = make_runtime("cpu", "fp32")
    catalog = load_catalog(include_env=False)
    source = load_domain(catalog.datasets.get("fpb"), args.data_dir, ("train", "validation", "test"))
    target = load_domain(catalog.datasets.get("tfns"), args.data_dir, ("test",))
    space = pair_label_space(source, [target], "fpb_to_tfns")
    model = resolve_model("minilm-l6", catalog)
    tok = load_tokenizer(model)
    base = load_protocol("standard")
    train = encode_split(source.role("train"), tok, space, base.max_length)
    val = encode_split(source.role("validation"), tok, space, base.max_length)
    val = type(val)(val.input_ids[:32], val.labels[:32], 0)

    def run(steps: int):
        proto = base.with_overrides(learning_rates=(1e-4,), epochs=1, max_steps=steps)
        return fine_tune(
            lambda: load_classifier(model, space, tok.pad_token_id), train, val, proto, 0, tok.pad_token_id, runtime
        )

    run(args.warmup)  # warm-up: allocator, kernels, page cache
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("fine_tune"):
        result = run(args.steps)
    wall = time.perf_counter() - t0
    step_seconds = sum(h.seconds for h in result.history)

    # Self time per operator (each microsecond counted once, in the op that spent it).
    rows = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    total_self = sum(s for _, s, _ in rows)
    by_cat: dict[str, float] = {}
    for key, s, _ in rows:
        by_cat[category(key)] = by_cat.get(category(key), 0.0) + s
    top = sorted(rows, key=lambda r: -r[1])[:20]

    print(
        f"{args.steps} profiled steps: {step_seconds:.1f} s in the training steps ({step_seconds / args.steps:.3f} s/step), "
        f"{wall:.1f} s wall with model build and the 32-example validation pass; torch threads {torch.get_num_threads()}"
    )
    print("\ncategory      self s   share")
    for cat, s in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"{cat:<12} {s:7.2f}  {s / total_self:6.1%}")
    print("\noperator                                          self s   share   calls")
    for key, s, n in top:
        print(f"{key[:48]:<48} {s:7.2f}  {s / total_self:6.1%}  {n:6d}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "steps": args.steps,
                "step_seconds": step_seconds,
                "wall_seconds": wall,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "self_seconds_total": total_self,
                "categories": {c: {"seconds": s, "share": s / total_self} for c, s in by_cat.items()},
                "top_operators": [{"op": k, "self_seconds": s, "calls": n} for k, s, n in top],
            },
            indent=1,
        )
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side by side in one process: fine-tune `minilm-l6` for one epoch on the FPB source and score the
TFNS target three ways, all with the protocol's hyper-parameters (batch 32, AdamW, weight decay
0.01, linear schedule with 6 % warmup, max length 128, one learning rate) on the same split:

Every recipe's time includes loading its data, tokenizer and model.

  (a) the seeds' recipe: transformers `Trainer`, every example padded to max length;
  (b) a tuned `Trainer`: dynamic padding + length-grouped sampling;
  (c) shiftbench's runner (`shiftbench.run`, end to end: loading, training, source-validation
      model selection, ID and OOD scoring, writing results);
  (d) (c) with `precision: bf16` (autocast; opt-in, in the protocol hash), for its speed and F1.

Prints wall time per phase, the speed ratios, macro-F1 and MFU (6 x non-embedding parameters x
real tokens + attention FLOPs, per training second, against a fp32 matmul peak measured in the
same run), and writes them as JSON under benchmarks/results/.

    python benchmarks/side_by_side.py                 # single pair, seed 0
    python benchmarks/side_by_side.py --seeds 0,1,2   # F1 noise across seeds
    python benchmarks/side_by_side.py --suite         # also: default suite, (b) once per pair vs (c)
    python benchmarks/side_by_side.py --only b,c,d    # no (a); (d) = (c) in bf16
    python benchmarks/side_by_side.py --only b,c --max-length 64   # another length (default 128)
    python benchmarks/side_by_side.py --only c --suite --workers 2  # the suite also with run --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import shiftbench
from shiftbench.data.datasets import load_domain, pair_label_space
from shiftbench.modeling.models import load_tokenizer, resolve_model
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import load_protocol
from shiftbench.tasks.metrics import classification_metrics

HERE = Path(__file__).resolve().parent


def matmul_peak_gflops(seconds: float = 3.0, n: int = 2048) -> float:
    """Best fp32 GEMM rate over a few seconds: the machine's practical peak, measured now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def train_flops(lengths: np.ndarray, n_params: int, n_layers: int, d_model: int) -> float:
    """6N per real token plus attention (12 * layers * d * T per token of a length-T sequence)."""
    lengths = lengths.astype(np.float64)
    return float((6 * n_params * lengths + 12 * n_layers * d_model * lengths**2).sum())


def _hf_dataset(texts, labels, tokenizer, max_length, pad_to_max):
    import datasets

    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length" if pad_to_max else False)
    return datasets.Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": [int(x) for x in labels]}
    )


def run_trainer(tuned: bool, ctx: dict, seed: int, lr: float) -> dict:
    """(a) when tuned is False, (b) when True."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from shiftbench.modeling.models import load_classifier
    from shiftbench.training.train import seed_everything

    t0 = time.perf_counter()
    # Like (c), each recipe loads its data, tokenizer and model inside its own timing.
    ctx = (
        {**ctx, **context(ctx["data_dir"], ctx["device"], ctx["protocol"].max_length)}
        if ctx.get("fresh", True)
        else ctx
    )
    p, tok = ctx["protocol"], ctx["tokenizer"]
    train = _hf_dataset(ctx["train_texts"], ctx["train_labels"], tok, p.max_length, pad_to_max=not tuned)
    test = _hf_dataset(ctx["test_texts"], ctx["test_labels"], tok, p.max_length, pad_to_max=not tuned)
    seed_everything(seed)
    model = load_classifier(ctx["model"], ctx["space"], tok.pad_token_id)
    t_prep = time.perf_counter() - t0
    extra = {"train_sampling_strategy": "group_by_length"} if tuned else {}
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.eval_batch_size,
        learning_rate=lr,
        weight_decay=p.weight_decay,
        warmup_steps=p.warmup_ratio,
        num_train_epochs=1,
        lr_scheduler_type="linear",
        max_grad_norm=p.max_grad_norm,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_num_workers=0,
        **extra,
    )
    collator = DataCollatorWithPadding(tok) if tuned else None
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    t1 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    out = trainer.predict(test)
    t_eval = time.perf_counter() - t2
    # Score against the label_ids Trainer returns: with length grouping its order is not ours.
    f1 = classification_metrics(out.label_ids, out.predictions.argmax(-1))["macro_f1"]
    return {
        "prepare_s": t_prep,
        "train_s": t_train,
        "eval_s": t_eval,
        "total_s": t_prep + t_train + t_eval,
        "ood_macro_f1": f1,
    }


def run_shiftbench(
    ctx: dict, seed: int, lr: float, pairs: list[str], work: Path, precision: str = "fp32", workers: int = 1
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    proto = work / f"one_epoch_{precision}.yaml"
    length = ctx["protocol"].max_length
    proto.write_text(
        f"base: standard\nlearning_rates: [{lr}]\nepochs: 1\nprecision: {precision}\nmax_length: {length}\n"
    )
    t0 = time.perf_counter()
    summary = shiftbench.run(
        pairs=pairs,
        models=["minilm-l6"],
        seeds=[seed],
        protocol=str(proto),
        data_dir=ctx["data_dir"],
        results_dir=work / f"results-{seed}-{precision}-w{workers}",
        cache_dir=work / f"cache-{seed}-{precision}-w{workers}",
        device=ctx["device"],
        workers=workers,
    )
    total = time.perf_counter() - t0
    r = summary.new_results
    train_s = sum({x.finetune_id: x.train_seconds for x in r}.values())
    first = [x for x in r if x.pair == pairs[0]][0]
    return {
        "train_s": train_s,
        "eval_s": sum({x.run_id: x.eval_seconds for x in r}.values()),
        "total_s": total,
        "ood_macro_f1": first.ood_scores["macro_f1"],
        "id_macro_f1": first.id_scores["macro_f1"],
        "history": list(first.history),
    }


def context(data_dir: str | None, device: str, max_length: int = 128) -> dict:
    """Data, tokenizer, model and the protocol (`standard` at ``max_length`` tokens) all recipes share."""
    catalog = load_catalog(include_env=False)
    pair = catalog.pairs.get("fpb_to_tfns")
    source = load_domain(catalog.datasets.get("fpb"), data_dir, ("train", "validation", "test"))
    target = load_domain(catalog.datasets.get("tfns"), data_dir, ("test",))
    space = pair_label_space(source, [target], pair.name)
    model = resolve_model("minilm-l6", catalog)
    tok = load_tokenizer(model)
    train = source.role("train")
    return {
        "protocol": load_protocol("standard").with_overrides(max_length=max_length),
        "tokenizer": tok,
        "model": model,
        "space": space,
        "train_texts": train.texts,
        "train_labels": train.label_ids(space),
        "test_texts": target.role("test").texts,
        "test_labels": target.role("test").label_ids(space),
        "data_dir": data_dir,
        "device": device,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lr", type=float, default=1e-4, help="the one learning rate all three use")
    ap.add_argument("--only", default="a,b,c", help="which recipes to run")
    ap.add_argument("--suite", action="store_true", help="also time the default suite: (b) once per pair vs (c)")
    ap.add_argument("--data-dir", default=os.environ.get("SHIFTBENCH_DATA_DIR"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-length", type=int, default=128, help="tokens; every recipe truncates (and (a) pads) to it")
    ap.add_argument(
        "--workers", type=int, default=1, help="--suite: also time (c) with `run --workers N` (N processes)"
    )
    ap.add_argument("--out", default=None, help="default: benchmarks/results/side_by_side[_len<N>].json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shiftbench.modeling.device import make_runtime

    make_runtime(args.device, "fp32")  # thread settings, as the runner uses them
    seeds = [int(s) for s in args.seeds.split(",")]
    only = set(args.only.split(","))
    ctx = context(args.data_dir, args.device, args.max_length)
    if args.out is None:
        suffix = "" if args.max_length == 128 else f"_len{args.max_length}"
        args.out = str(HERE / "results" / f"side_by_side{suffix}.json")
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak (measured now): {peak:.1f} GFLOP/s; torch threads {torch.get_num_threads()}", flush=True)

    from shiftbench.data.encode import encode_split
    from shiftbench.modeling.models import load_classifier

    net = load_classifier(ctx["model"], ctx["space"], ctx["tokenizer"].pad_token_id)
    n_params, cfg = non_embedding_params(net), net.config
    lengths = encode_split(
        load_domain(
            load_catalog(include_env=False).datasets.get("fpb"), args.data_dir, ("train", "validation", "test")
        ).role("train"),
        ctx["tokenizer"],
        ctx["space"],
        ctx["protocol"].max_length,
    ).lengths
    flops = train_flops(lengths, n_params, cfg.num_hidden_layers, cfg.hidden_size)
    print(
        f"non-embedding parameters {n_params / 1e6:.2f}M; one epoch = {lengths.sum()} real tokens = {flops / 1e12:.2f} TFLOP"
    )

    work = Path(tempfile.mkdtemp(prefix="sbs-"))
    rows: dict[str, list[dict]] = {k: [] for k in "abcd" if k in only}
    for seed in seeds:
        for key in sorted(rows):
            print(f"-- seed {seed}: ({key}) ...", flush=True)
            if key in ("c", "d"):
                r = run_shiftbench(ctx, seed, args.lr, ["fpb_to_tfns"], work, "bf16" if key == "d" else "fp32")
            else:
                r = run_trainer(key == "b", ctx, seed, args.lr)
            r["mfu"] = flops / r["train_s"] / 1e9 / peak
            if "history" in r:  # (c)/(d): the training steps alone (no validation pass, no model build)
                r["step_mfu"] = flops / sum(h["seconds"] for h in r["history"]) / 1e9 / peak
            rows[key].append(r)
            print(
                f"   ({key}) train {r['train_s']:.1f} s, eval {r['eval_s']:.1f} s, total {r['total_s']:.1f} s, "
                f"OOD macro-F1 {r['ood_macro_f1']:.4f}, MFU {r['mfu']:.1%}"
                + (f" (training steps alone {r['step_mfu']:.1%})" if "step_mfu" in r else ""),
                flush=True,
            )

    report = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "matmul_peak_gflops": peak,
        "non_embedding_params": n_params,
        "epoch_real_tokens": int(lengths.sum()),
        "epoch_tflop": flops / 1e12,
        "lr": args.lr,
        "max_length": args.max_length,
        "seeds": seeds,
        "runs": rows,
    }
    med = {k: float(np.median([r["total_s"] for r in v])) for k, v in rows.items()}
    print("\nrecipe  total_s  train_s  eval_s  OOD macro-F1 (per seed)          MFU")
    for k, v in rows.items():
        f1s = ", ".join(f"{r['ood_macro_f1']:.4f}" for r in v)
        print(
            f"({k})   {med[k]:7.1f}  {np.median([r['train_s'] for r in v]):7.1f}  "
            f"{np.median([r['eval_s'] for r in v]):6.1f}  {f1s:<30}  {np.median([r['mfu'] for r in v]):.1%}"
        )
    if "a" in med and "c" in med:
        report["speedup_c_over_a"] = med["a"] / med["c"]
        print(f"(c) is {report['speedup_c_over_a']:.2f}x faster than (a) (target >= 3.5x)")
    if "b" in med and "c" in med:
        report["time_c_over_b"] = med["c"] / med["b"]
        print(f"(c) takes {report['time_c_over_b']:.2f}x the wall time of (b) (target <= 1.05x)")

    if "c" in med and "d" in med:
        report["speedup_bf16_over_fp32"] = med["c"] / med["d"]
        df1 = np.mean([d["ood_macro_f1"] - c["ood_macro_f1"] for c, d in zip(rows["c"], rows["d"])])
        report["bf16_minus_fp32_ood_macro_f1"] = float(df1)
        print(
            f"(d) bf16 is {report['speedup_bf16_over_fp32']:.2f}x faster than (c) fp32; OOD macro-F1 change {df1:+.4f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))  # now, and again with the suite
    if args.suite:
        report["suite"] = suite_comparison(ctx, args, work)
        out.write_text(json.dumps(report, indent=1, default=float))
    print(f"written {out}")
    return 0


def suite_comparison(ctx: dict, args, work: Path) -> dict:
    """The default suite, one seed: (b) scripted once per pair vs (c) one `shiftbench run`."""
    from shiftbench.modeling.models import load_tokenizer as _tok

    catalog = load_catalog(include_env=False)
    pairs = list(catalog.suites.get("default").pairs)
    t0 = time.perf_counter()
    for name in pairs:
        pair = catalog.pairs.get(name)
        src = load_domain(catalog.datasets.get(pair.source), args.data_dir, ("train", "validation", "test"))
        tgt = load_domain(catalog.datasets.get(pair.targets[0]), args.data_dir, ("test",))
        space = pair_label_space(src, [tgt], name)
        c = {
            **ctx,
            "fresh": False,
            "space": space,
            "tokenizer": _tok(ctx["model"]),
            "train_texts": src.role("train").texts,
            "train_labels": src.role("train").label_ids(space),
            "test_texts": tgt.role("test").texts,
            "test_labels": tgt.role("test").label_ids(space),
        }
        r = run_trainer(True, c, 0, args.lr)
        print(f"   (b) {name}: {r['total_s']:.1f} s", flush=True)
    b_total = time.perf_counter() - t0
    r = run_shiftbench(ctx, 0, args.lr, pairs, work / "suite")
    ratio = b_total / r["total_s"]
    print(
        f"default suite, 1 seed: (b) per pair {b_total:.1f} s, (c) {r['total_s']:.1f} s: {ratio:.2f}x (target >= 1.3x)"
    )
    # (c)'s breakdown: fine-tuning (training steps and per-epoch source validation) and scoring.
    out = {
        "b_total_s": b_total,
        "c_total_s": r["total_s"],
        "c_train_s": r["train_s"],
        "c_eval_s": r["eval_s"],
        "speedup_c_over_b": ratio,
    }
    if args.workers > 1:  # the same suite with its fine-tunes in N processes (fresh caches, like (c))
        w = run_shiftbench(ctx, 0, args.lr, pairs, work / "suite", workers=args.workers)
        out |= {
            "workers": args.workers,
            "c_workers_total_s": w["total_s"],
            "speedup_c_workers_over_b": b_total / w["total_s"],
            "c_workers_ood_macro_f1_minus_c": w["ood_macro_f1"] - r["ood_macro_f1"],
        }
        print(
            f"default suite, 1 seed, --workers {args.workers}: (c) {w['total_s']:.1f} s: "
            f"{out['speedup_c_workers_over_b']:.2f}x (b) (target >= 1.5x); OOD macro-F1 "
            f"{out['c_workers_ood_macro_f1_minus_c']:+.4f} vs one process"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())

"""What adding one more target to a finished run costs, side by side in one process.

A fine-tune is cached by its identity, so scoring a new target later must cost only that
target's evaluation. This script fine-tunes `minilm-l6` on the FPB source once (protocol
`quick` by default, ~2 minutes on 2 cores; reused from the fine-tune cache when present), then
times, alternately and `--repeat` times each, in fresh results dirs:

  (add)  `shiftbench.run` of a pair whose target is new (`tfns_again`: TFNS under another name,
         so its run id is new): plan, cached weights, ID and OOD scoring, writing;
  (eval) `shiftbench.run --eval-only` of the same pair with the same weights exported as a
         checkpoint directory: the evaluation-only cost of that target.

Target: (add) <= 1.1x (eval), and no fine-tune in (add). Writes benchmarks/results/add_target.json.

    python benchmarks/add_target.py [--protocol quick|standard] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REGISTRY = """
datasets:
  tfns_again:
    base: tfns
    description: TFNS under another name, to add a target to a finished run
pairs:
  fpb_to_tfns_again:
    task: text-classification
    source: fpb
    targets: [tfns_again]
"""


def export_checkpoint(job, settings, out: Path) -> Path:
    """The cached fine-tune of ``job`` as a plain checkpoint directory (config with id2label)."""
    from shiftbench.execution.cache import load_finetuned
    from shiftbench.modeling.models import load_classifier, load_tokenizer

    ft = load_finetuned(settings.cache_dir, job.finetune_id)
    assert ft is not None, "the fine-tune should be cached by now"
    tok = load_tokenizer(job.model)
    net = load_classifier(job.model, job.label_space, tok.pad_token_id)
    net.load_state_dict(ft.state)
    net.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", default=os.environ.get("SHIFTBENCH_DATA_DIR"))
    ap.add_argument("--cache-dir", default=None, help="fine-tune cache (default: shiftbench's)")
    ap.add_argument("--out", default=str(HERE / "results" / "add_target.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shiftbench

    work = Path(tempfile.mkdtemp(prefix="add-target-"))
    reg = work / "again.yaml"
    reg.write_text(REGISTRY)
    common = {"data_dir": args.data_dir, "cache_dir": args.cache_dir, "registries": [reg], "seeds": [0]}
    t0 = time.perf_counter()
    first = shiftbench.run(
        pairs=["fpb_to_tfns"], models=["minilm-l6"], protocol=args.protocol, results_dir=work / "base", **common
    )
    print(f"finished run (fine-tune or cache hit): {time.perf_counter() - t0:.1f} s", flush=True)
    job = first.plan.jobs[0]
    ckpt = export_checkpoint(job, first.plan.settings, work / "checkpoint")

    timings: dict[str, list[float]] = {"add": [], "eval": []}
    trained: list[float] = []
    for i in range(args.repeat):
        for kind in ("add", "eval"):
            t0 = time.perf_counter()
            if kind == "add":
                s = shiftbench.run(
                    pairs=["fpb_to_tfns_again"],
                    models=["minilm-l6"],
                    protocol=args.protocol,
                    results_dir=work / f"add-{i}",
                    **common,
                )
                trained += [r.train_seconds for r in s.new_results]
            else:
                s = shiftbench.run(
                    pairs=["fpb_to_tfns_again"],
                    models=[str(ckpt)],
                    protocol=args.protocol,
                    eval_only=True,
                    results_dir=work / f"eval-{i}",
                    **common,
                )
            timings[kind].append(time.perf_counter() - t0)
            assert len(s.new_results) == 1
            print(f"  ({kind}) repeat {i}: {timings[kind][-1]:.2f} s", flush=True)
    add, ev = float(np.median(timings["add"])), float(np.median(timings["eval"]))
    report = {
        "protocol": args.protocol,
        "repeat": args.repeat,
        "add_s": timings["add"],
        "eval_only_s": timings["eval"],
        "median_add_s": add,
        "median_eval_only_s": ev,
        "ratio": add / ev,
        "train_seconds_recorded_by_add": trained,
    }
    print(
        f"adding a target: {add:.2f} s; evaluation only: {ev:.2f} s; ratio {add / ev:.2f} (target <= 1.1); "
        f"the added runs carry the original fine-tune's train_seconds {sorted(set(trained))} (no re-fine-tune)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

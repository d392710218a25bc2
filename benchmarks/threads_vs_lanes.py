"""Training steps per second on this machine: one process with N torch threads against N
processes of 1 thread each (the board's "lanes", benchmarks/board_v2.sh). A minilm-l6-shaped
BERT (6 layers, 384 wide, random weights: the speed does not depend on them), batch 32 x 48
tokens (about an FPB batch), AdamW; 3 warm-up steps, then 20 timed ones.

    python benchmarks/threads_vs_lanes.py            # 2 threads vs 2 lanes of 1 thread
    python benchmarks/threads_vs_lanes.py --steps 40
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def steps_per_second(threads: int, steps: int) -> float:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        num_labels=3,
    )
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randint(0, 30000, (32, 48)), torch.randint(0, 3, (32,))

    def step() -> None:
        opt.zero_grad()
        model(input_ids=x, labels=y).loss.backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # run one process of N threads, print its rate
    args = parser.parse_args()
    if args.child:
        print(steps_per_second(args.child, args.steps))
        return
    child = [sys.executable, __file__, "--steps", str(args.steps), "--child"]
    one = float(subprocess.run([*child, str(args.cores)], capture_output=True, text=True, check=True).stdout)
    lanes = [subprocess.Popen([*child, "1"], stdout=subprocess.PIPE, text=True) for _ in range(args.cores)]
    rates = [float(p.communicate()[0]) for p in lanes]
    print(f"1 process x {args.cores} threads: {one:.3f} steps/s")
    print(f"{args.cores} processes x 1 thread: {sum(rates):.3f} steps/s ({' + '.join(f'{r:.3f}' for r in rates)})")
    print(f"lanes / threads: {sum(rates) / one:.2f}x")


if __name__ == "__main__":
    main()

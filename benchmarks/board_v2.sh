#!/usr/bin/env bash
# The standard-v2 board (issue #16), seed-major: seed 0 of everything, then seed 1, ... so that a
# stopped run (a session's end) leaves whole seeds behind, and re-running skips what is done.
#   4 checkpoints x 3 sentiment pairs (suite board), the remedies on fpb_to_tfns (augment-v2,
#   adversarial-v2, lora-v2 on minilm-l6; distill-v2 on minilm-l6-l2), the NER pairs (suite ner)
#   for seeds 0-2; seeds 3-4 for minilm-l6 and minilm-l6-l4, the comparison the README leads with.
# Usage: SHIFTBENCH_DATA_DIR=../shared/data bash benchmarks/board_v2.sh [--results-dir DIR] [...]
# (extra arguments go to every `shiftbench run`).
set -euo pipefail
run() { python -m shiftbench run "$@" "${EXTRA[@]}"; }
EXTRA=("$@")
for seed in 0 1 2; do
  run --suite board --seeds "$seed"
  for remedy in augment-v2 adversarial-v2 lora-v2; do
    run --pair fpb_to_tfns --model minilm-l6 --protocol "$remedy" --seeds "$seed"
  done
  run --pair fpb_to_tfns --model minilm-l6-l2 --protocol distill-v2 --seeds "$seed"
  run --suite ner --seeds "$seed"
done
for seed in 3 4; do
  run --suite board --model minilm-l6 --model minilm-l6-l4 --seeds "$seed"
done

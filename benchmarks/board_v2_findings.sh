#!/usr/bin/env bash
# The commands behind the README's standard-v2 findings (issue #16), on a results dir holding the
# board of benchmarks/board_v2.sh. Each comparison is a recipe question (seed- and example-aware
# intervals over the shared seeds; `compare` says so in its output).
# Usage: bash benchmarks/board_v2_findings.sh [RESULTS_DIR]   (default: results)
set -euo pipefail
R=${1:-results}
sb() { python -m shiftbench "$@"; }
echo "## leaderboard (macro-F1; NER: entity micro-F1)"
sb leaderboard --results-dir "$R" >/dev/null
sb leaderboard --results-dir "$R" --format markdown --metric macro_f1 | grep -E '^\| model|^\|---|-v2 \|' | grep -v wikigold_to
sb leaderboard --results-dir "$R" --format markdown --metric entity_micro_f1 | grep -E '^\| model|^\|---|standard-v2'
echo "## model size vs gap: each smaller or untrained checkpoint against minilm-l6 (gap_diff > 0: B loses more)"
for b in minilm-l6-l4 minilm-l6-l2 minilm-l6-random; do
  sb compare --results-dir "$R" minilm-l6@standard-v2 "$b@standard-v2"
done
echo "## remedies on fpb_to_tfns against minilm-l6@standard-v2"
for remedy in augment-v2 adversarial-v2 lora-v2; do
  sb compare --results-dir "$R" minilm-l6@standard-v2 "minilm-l6@$remedy" --pair fpb_to_tfns --effect 0.02
done
echo "## distillation: minilm-l6-l2 with and without its minilm-l6 teacher"
sb compare --results-dir "$R" minilm-l6-l2@standard-v2 minilm-l6-l2@distill-v2 --pair fpb_to_tfns --effect 0.02
echo "## decoder vs encoder (smollm2-135m was not re-run: its standard fine-tune, one seed)"
sb compare --results-dir "$R" minilm-l6@standard-v2 smollm2-135m@standard --pair fpb_to_tfns
echo "## selection: edges, plateau, cost (old protocol beside the new)"
python benchmarks/board_audit.py --results-dir "$R" --protocol standard --protocol standard-v2 \
  --protocol augment-v2 --protocol adversarial-v2 --protocol lora-v2 --protocol distill-v2 | sed -n '/^edges:/,$p'
echo "## effective robustness and ΔER (report; one line per protocol family)"
sb report --results-dir "$R"

#!/usr/bin/env bash
# Publish a finished standard-v2 board (benchmarks/board_v2.sh, issue #16) into the committed
# results: check that every run of the board is done, copy exactly the board's run files and
# per-example predictions (nothing else the scratch dir may hold), then rebuild what derives from
# them: the leaderboard, the estimator board and the report.
# A run file already in DEST is never overwritten: the same run id with other bytes stops the copy
# (run ids are hashes of the run's identity, so that means two runs of one config disagree).
# Usage: SHIFTBENCH_DATA_DIR=../shared/data bash benchmarks/board_v2_publish.sh SRC [DEST]
#        SRC: the board's --results-dir; DEST: default results. Extra seeds (BOARD_EXTRA_SEEDS=1)
#        are published too when set here as they were for the board.
set -euo pipefail
SRC=${1:?usage: board_v2_publish.sh SRC_RESULTS_DIR [DEST_RESULTS_DIR]}
DEST=${2:-results}
HERE=$(cd "$(dirname "$0")" && pwd)
plan=$(mktemp)
trap 'rm -f "$plan"' EXIT

# 1. The plan of every step of the board against SRC: nothing may be left to do.
bash "$HERE/board_v2.sh" --results-dir "$SRC" --dry-run >"$plan"
if grep -E '^[0-9]+ of [0-9]+ fine-tunes' "$plan" | grep -qvE '^0 of [0-9]+ fine-tunes and 0 of'; then
  echo "board_v2_publish: the board in $SRC is not finished:" >&2
  grep -E '^\[(todo|pending)\]|^ +\[todo\]' "$plan" | sed 's/^/  /' >&2
  exit 1
fi
mapfile -t runs < <(grep -oE 'run=[0-9a-f]{16}' "$plan" | cut -d= -f2 | sort -u)
[ "${#runs[@]}" -gt 0 ] || { echo "board_v2_publish: no runs in the plan of $SRC" >&2; exit 1; }

# 2. Copy: every file is checked before any is written, so a clash leaves DEST as it was.
mkdir -p "$DEST/runs" "$DEST/predictions"
new=()
n_new_runs=0
for id in "${runs[@]}"; do
  for sub in runs predictions; do
    f="$SRC/$sub/$id.parquet"
    [ -f "$f" ] || { echo "board_v2_publish: $f: missing (the plan says run $id is done)" >&2; exit 1; }
    if [ -e "$DEST/$sub/$id.parquet" ]; then
      cmp -s "$f" "$DEST/$sub/$id.parquet" || {
        echo "board_v2_publish: $DEST/$sub/$id.parquet: differs from $f; not overwritten" >&2
        exit 1
      }
    else
      new+=("$sub/$id.parquet")
      [ "$sub" = runs ] && n_new_runs=$((n_new_runs + 1))
    fi
  done
done
for rel in "${new[@]}"; do
  cp "$SRC/$rel" "$DEST/$rel.tmp" && mv "$DEST/$rel.tmp" "$DEST/$rel"
done
echo "board_v2_publish: ${#runs[@]} runs on the board, $n_new_runs newly copied into $DEST"

# 3. Everything derived from the run files.
python -m shiftbench leaderboard --results-dir "$DEST" >/dev/null
python -m shiftbench leaderboard --estimators --results-dir "$DEST" >/dev/null
python -m shiftbench report --results-dir "$DEST"
echo "next: bash benchmarks/board_v2_findings.sh $DEST, then the README's Leaderboard and estimator sections"

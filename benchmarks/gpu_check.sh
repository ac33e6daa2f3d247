#!/usr/bin/env bash
# The GPU measurements in one call (under 8 minutes on one H100/H200), written as one JSON file whose first key,
# "extraction", holds videos/s on MSR-VTT-like and on 720p clips against the targets (>= 50 and >= 15), the
# steady-state GPU busy %, start-up seconds and the per-stage account. Steps, with their limits:
#   prepare         50 s  before any clock: 32 distinct MSR-VTT-like clips (320x240, 15 s, 30 fps, H.264 ~400 kbit/s
#                         + stereo AAC 44.1 kHz) and 16 of 720p (10 s, ~2.5 Mbit/s), x264 preset veryfast, one
#                         clip per core; Whisper-base shapes and ViT-B-32 with random weights, saved once.
#                         Clips are hard-linked under as many names as a step needs (gpu_extract_probe.py).
#   decode          35 s  DecodePool alone, workers = cores - 2: time to the first item of a first pool (cold
#                         forkserver) and of a second (warm); steady decode-only videos/s of both kinds; PyAV's
#                         hwaccel devices and whether NVDEC (cuda) decodes a 720p clip.
#   encode          35 s  fp16 encoders alone on a batch of decoded clips, synchronised loops after warm-up:
#                         ViT-B-32 images/s (bare tower, and through FeatureMapper.encode_images from host
#                         pixels), Whisper-base 30 s windows/s (bare encoder, and through encode_audio).
#   extract-msrvtt  50 s  `python -m gais_pipe extract --config paper` (random weights, fp16, decode workers =
#   extract-720p    50 s  cores - 2) in a fresh workdir, on as many clips as ~15 s of steady state takes at the
#                         rate decode and encode predict; nvidia-smi -lms 200 only while the command runs; the
#                         account's per-batch stamps; GPU busy % over samples after the first batch.
#   search          25 s  the torch exact search build-index serves without faiss (index/searchable.py
#                         ExactIndex, fp16 on the GPU) at 1M x 512: p50/p99 of 64 text-like queries and of one.
#   pipeline       100 s  the demo's path: make-synthetic 240 (seed 0), extract --config tiny, train, eval.
#   precision       35 s  fp16 and bf16 extraction against fp32 (TF32) on 8 clips of 4 s (was 12; 90 s).
#   train           20 s  heads' training steps with bf16 autocast (the fp32 run is dropped: 52 against 47
#                         steps/s on the H200 said bf16 gains nothing at this size).
#   eval            25 s  evaluation at 5k x 5k: full and two-stage scoring.
#   index           40 s  faiss-gpu at 1M x 512 (index_bench.py --gpu), only when faiss imports.
# Limits add up to 425 s (465 s with faiss). On top, a guard: no step runs past 465 s from the script's start
# (a step's limit is cut to what is left, a step with under 5 s left is skipped and says so), which leaves
# room for the wheels' install and the report: the call ends under 8 minutes even when steps hang. Dropped
# to fit: extract_bench.py's step (the CLI runs now, not a benchmark's main module) and train-fp32.
#
#   bash benchmarks/gpu_check.sh [--small] [--only STEP ...] [--out FOLDER]
#
# --small runs every step but pipeline and eval on the CPU with tiny sizes (tiny config with a tiny random
# Whisper, a few 160x120 clips, 2 decode workers, search at 10k x 64): what CI tests. Packages the machine
# lacks (av, decord, open_clip, pebble, faiss) are installed from .whl/ when that folder holds wheels. The
# package itself is used from this source tree (a link farm on PYTHONPATH) when it is not installed.
set -uo pipefail
START=$SECONDS  # the wheels' install counts against the budget too
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
  for d in extract retrieval index workdir configs serve; do ln -s "$PWD/$d" "$LINKS/gais_pipe/$d"; done
  export PYTHONPATH=$LINKS${PYTHONPATH:+:$PYTHONPATH}
fi
CORES=$(nproc)
BUDGET=$([ "$SMALL" = 1 ] && echo 1500 || echo 465)  # seconds from the start that steps may run to
step() {  # step NAME LIMIT_SECONDS COMMAND...: run it, keep its output, note a failure instead of stopping
  local name=$1 limit=$2
  shift 2
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 5 ]; then
    echo "skipped: out of time (${left} s of the ${BUDGET} s left)" | tee "$OUT/$name.status" >&2
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)" >&2
  if STEP_LIMIT=$limit timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo ok >"$OUT/$name.status"
  else
    echo "failed ($?)" >"$OUT/$name.status"
  fi
  tail -3 "$OUT/$name.log" >&2
}

PROBE=("$PY" benchmarks/gpu_extract_probe.py)
if [ "$SMALL" = 1 ]; then
  SCRATCH=$OUT/scratch
  WORKERS=2
  WHISPER=$SCRATCH/whisper-random
  CFG=(--config tiny --set features.audio.encoder=whisper --set "features.audio.model=$WHISPER"
    --set runtime.decode_workers=$WORKERS)
  CLIPS=(--msrvtt-distinct 3 --msrvtt-size 160x120 --msrvtt-seconds 3 --msrvtt-kbps 100 --hd-distinct 2
    --hd-size 320x180 --hd-seconds 2 --hd-kbps 300 --preset ultrafast --whisper-shape tiny-test)
  DECODE=(--count 12 --cap-s 3)
  ENCODE=(--seconds 0.5 --warmup 1 --set runtime.batch_videos=4)
  COUNT=(--count 8)
  SEARCH=(--rows 10000 --dim 64 --repeats 10)
else
  SCRATCH=${TMPDIR:-/tmp}/gais-gpu-check
  WORKERS=$((CORES > 4 ? CORES - 2 : CORES))
  WHISPER=$SCRATCH/whisper-random  # Whisper-base's shapes, random weights, saved once as HF does
  CFG=(--config paper --set features.clip.pretrained=random --set "features.audio.model=$WHISPER"
    --set runtime.precision=fp16 --set runtime.decode_workers=$WORKERS)
  CLIPS=(--preset veryfast --whisper-shape base)
  DECODE=(--count 400 --cap-s 8)
  ENCODE=(--seconds 2.5 --warmup 3)
  COUNT=(--target-s 15)
  SEARCH=(--rows 1000000 --dim 512 --repeats 50)
fi
mkdir -p "$SCRATCH"
COMMON=(--scratch "$SCRATCH" "${CFG[@]}" --workers "$WORKERS")
step prepare 50 "${PROBE[@]}" prepare "${COMMON[@]}" "${CLIPS[@]}" --json "$OUT/prepare.json"
step decode 35 "${PROBE[@]}" decode "${COMMON[@]}" "${DECODE[@]}" --json "$OUT/decode.json"
step encode 35 "${PROBE[@]}" encode "${COMMON[@]}" "${ENCODE[@]}" --json "$OUT/encode.json"
step extract-msrvtt 50 "${PROBE[@]}" extract "${COMMON[@]}" --kind msrvtt --out "$OUT" "${COUNT[@]}" \
  --json "$OUT/extract-msrvtt.json"
[ "$SMALL" = 1 ] && COUNT=(--count 6)
step extract-720p 50 "${PROBE[@]}" extract "${COMMON[@]}" --kind hd --out "$OUT" "${COUNT[@]}" \
  --json "$OUT/extract-720p.json"
step search 25 "${PROBE[@]}" search "${SEARCH[@]}" --json "$OUT/search.json"

if [ "$SMALL" = 1 ]; then
  step precision 300 "$PY" benchmarks/precision_check.py --config tiny --videos 2 --seconds 1 --size 160x120 \
    --precisions fp32 bf16 --json "$OUT/precision.json"
  step train 300 "$PY" benchmarks/train_eval_bench.py --frames 4 --dim 64 --audio-dim 32 --batch 8 --steps 2 \
    --videos 64 --texts 64 --k 10 --only train eval-two-stage --json "$OUT/train.json"
  step index 300 "$PY" benchmarks/index_bench.py --sizes 5000 --dim 64 --kinds flat auto --queries 20 \
    --json "$OUT/index.json"
else
  PAPER=(--config paper --set features.clip.pretrained=random --set "features.audio.model=$WHISPER")
  step pipeline 100 bash -c 'set -e; G=("$0" -m gais_pipe); W=$1/pipeline; rm -rf "$W"
    "${G[@]}" make-synthetic "$W/synthetic" --videos 240 --seed 0
    "${G[@]}" extract "$W/synthetic/videos" --workdir "$W/work" --config tiny --quiet
    "${G[@]}" train --workdir "$W/work" --captions "$W/synthetic/captions.jsonl" --run-name gpu --quiet
    "${G[@]}" eval --workdir "$W/work" --checkpoint "$W/work/runs/gpu/best.safetensors" --split test
    cp "$W/work/runs/gpu/eval-test.json" "$2/pipeline.json"' "$PY" "$SCRATCH" "$OUT"
  step precision 35 "$PY" benchmarks/precision_check.py "${PAPER[@]}" --videos 8 --seconds 4 \
    --precisions fp32 fp16 bf16 --json "$OUT/precision.json"
  step train 20 "$PY" benchmarks/train_eval_bench.py --device cuda --precision bf16 --steps 50 \
    --only train --json "$OUT/train.json"
  step eval 25 "$PY" benchmarks/train_eval_bench.py --device cuda --texts 5000 --videos 5000 --k 500 \
    --only eval-full eval-two-stage --json "$OUT/eval.json"
  if "$PY" -c "import faiss" 2>/dev/null; then
    step index 40 "$PY" benchmarks/index_bench.py --gpu --sizes 1000000 --kinds flat ivf-sq8 ivf-pq --queries 200 \
      --json "$OUT/index.json"
  else
    echo "skipped: faiss is not importable here" | tee "$OUT/index.status" >&2
  fi
fi

"$PY" benchmarks/gpu_extract_probe.py report "$OUT" "$SMALL"
echo "gpu_check: $((SECONDS - START)) s" >&2

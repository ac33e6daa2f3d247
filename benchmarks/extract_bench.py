"""Benchmark of the extract stage: decode-only, encode-only and the full pipeline on the same videos.

    .venv/bin/python benchmarks/extract_bench.py --config tiny --videos 24 --seconds 8
    .venv/bin/python benchmarks/extract_bench.py --config paper \
        --set features.clip.pretrained=random --set features.audio.encoder=logmel --videos 16 --seconds 6

Generated test videos: mp4, h264 (libx264, its default GOP) 320x240 at 25 fps, a moving gradient
with a moving square and a little noise, and an AAC mono sine tone. Generation is not timed.

Figures (each after a warm-up on a few videos):
- decode-only videos/s: `decoded_stream` with the pipeline's decode workers and prefetch, no encoding
  (includes starting the DataLoader workers, as the pipeline does);
- encode-only frames/s: `FeatureMapper` on the pre-decoded videos held in memory, in batches of
  runtime.batch_videos (image tower + audio encoder + pooling);
- pipeline videos/s: `run_extract` into a fresh workdir (its own timer: from the start of
  decoding to the last shard written; model loading is excluded and reported separately);
- ratio = pipeline_time / max(decode_only_time, encode_only_time), target <= 1.15;
- stored bytes per video (shard files / videos) and raw array bytes per row.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from gais_pipe import extract_stage
from gais_pipe.config import Config, load_config
from gais_pipe.distributed import autocast_dtype, resolve_device
from gais_pipe.extract.audio_encoders import make_audio_encoder
from gais_pipe.extract.clip_model import load_clip
from gais_pipe.extract.discover import Problem, VideoRef, discover
from gais_pipe.extract.mapper import FeatureMapper, FeatureRow
from gais_pipe.extract.probe import probe
from gais_pipe.extract.reader import DecodedVideo, DecodeSpec, decoded_stream
from gais_pipe.extract.soundtrack import decode_soundtrack
from gais_pipe.extract.video_frames import sample_frames

console = Console()


# --- test videos ------------------------------------------------------------------------------
def make_video(
    path: Path,
    seconds: float,
    seed: int,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    audio_rate: int = 44100,
    preset: str = "medium",
) -> None:
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": preset}
        audio = container.add_stream("aac", rate=audio_rate, layout="mono")
        xs, ys = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        noise = [
            rng.normal(0, 6, (height, width, 3)).astype(np.float32) for _ in range(16)
        ]  # cycled: cheap, still noisy
        tone = 220.0 + 40.0 * seed
        chunk = 1024  # AAC frame size
        audio_pos = 0
        audio_total = int(seconds * audio_rate)
        for i in range(frames):
            phase = i / fps
            image = noise[i % len(noise)].copy()
            image[..., 0] += 127 + 127 * np.sin(xs / 23.0 + phase * 3.0 + seed)[None, :]
            image[..., 1] += 127 + 127 * np.sin(ys / 17.0 - phase * 2.0)[:, None]
            a, b = xs / 31.0 + phase * 5.0, ys / 31.0  # sin(a + b) from 1-D parts
            image[..., 2] += 127 + 127 * (
                np.sin(a)[None, :] * np.cos(b)[:, None] + np.cos(a)[None, :] * np.sin(b)[:, None]
            )
            cx, cy = (
                int((width - 40) * (0.5 + 0.5 * math.sin(phase + seed))),
                int((height - 40) * (0.5 + 0.5 * math.cos(phase * 1.3))),
            )
            image[cy : cy + 40, cx : cx + 40] = (255 * ((i // 10) % 2), 80, 200)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            while audio_pos < min(audio_total, (i + 1) * audio_rate // fps):  # keep the streams interleaved
                n = min(chunk, audio_total - audio_pos)
                t = (audio_pos + np.arange(n)) / audio_rate
                samples = (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)[None, :]
                aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                aframe.sample_rate = audio_rate
                aframe.pts = audio_pos
                aframe.time_base = Fraction(1, audio_rate)
                for packet in audio.encode(aframe):
                    container.mux(packet)
                audio_pos += n
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


# --- helpers ----------------------------------------------------------------------------------
def row_bytes(row: FeatureRow) -> dict[str, int]:
    """Bytes of one row as the shard stores it (strings: their UTF-8 length)."""
    sizes = {}
    for name, value in vars(row).items():
        if isinstance(value, str):
            sizes[name] = len(value.encode())
        else:
            sizes[name] = int(np.asarray(value).nbytes)
    return sizes


def write_list(path: Path, refs: list[VideoRef]) -> Path:
    path.write_text("".join(f"{r.path}\n" for r in refs))
    return path


class TimedMapper(FeatureMapper):
    """The library's mapper, timed: how long the main process spends encoding inside run_extract."""

    seconds = 0.0
    calls = 0

    def __call__(self, batch):
        start = time.perf_counter()
        try:
            return super().__call__(batch)
        finally:
            TimedMapper.seconds += time.perf_counter() - start
            TimedMapper.calls += 1


@contextlib.contextmanager
def instrumented_pipeline(enabled: bool):
    """Swap in TimedMapper and time shard writes inside extract_stage; restore afterwards."""
    if not enabled:
        yield {}
        return
    timings = {"write_s": 0.0}
    original_mapper, original_writer = extract_stage.FeatureMapper, extract_stage.ShardWriter

    class TimedWriter(original_writer):
        def flush(self):
            start = time.perf_counter()
            try:
                return super().flush()
            finally:
                timings["write_s"] += time.perf_counter() - start

    TimedMapper.seconds, TimedMapper.calls = 0.0, 0
    extract_stage.FeatureMapper, extract_stage.ShardWriter = TimedMapper, TimedWriter
    try:
        yield timings
    finally:
        extract_stage.FeatureMapper, extract_stage.ShardWriter = original_mapper, original_writer
        timings["encode_s"] = TimedMapper.seconds
        timings["encode_calls"] = TimedMapper.calls


def seed_models(models_from: Path, workdir: Path) -> None:
    """Give a fresh workdir the random checkpoint already made (same file, same sha256): saves minutes for ViT-B-32."""
    target = workdir / "models"
    target.mkdir(parents=True, exist_ok=True)
    for file in models_from.glob("*.safetensors"):
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)


# --- state shared by the steps ------------------------------------------------------------------
@dataclass
class Bench:
    """What every step reads: the arguments, the resolved config, the decode parallelism and the figures so far."""

    args: argparse.Namespace
    config: Config
    workers: int
    prefetch: int
    batch_videos: int
    frames_t: int
    tmp: Path
    results: dict

    @property
    def runtime(self) -> dict:
        return self.config["runtime"]

    @property
    def feats(self) -> dict:
        return self.config["features"]


@dataclass
class Models:
    """The encoders as run_extract loads them, and the decode spec and mapper built on them."""

    models_dir: Path
    clip: Any
    audio: Any
    spec: DecodeSpec
    mapper: FeatureMapper


# --- steps ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: which config, which videos, how many repeats, where the figures go."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="bundled config name or TOML path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable)",
    )
    parser.add_argument("--videos", type=int, default=24, help="test videos to generate")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each test video")
    parser.add_argument(
        "--audio-rate",
        type=int,
        default=44100,
        choices=(16000, 44100),
        help="AAC sample rate of the test videos",
    )
    parser.add_argument("--x264-preset", default="medium", help="libx264 preset of the generated videos")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated videos (e.g. 1280x720)")
    parser.add_argument("--gen-workers", type=int, default=1, help="processes that generate the test videos")
    parser.add_argument("--media", type=Path, help="use the videos in this folder instead of generating")
    parser.add_argument("--warmup-videos", type=int, default=4, help="videos used by each warm-up")
    parser.add_argument("--repeat", type=int, default=1, help="time each measure R times and report the fastest")
    parser.add_argument(
        "--threads", type=int, help="encoder threads in the main process (default: as run_extract chooses)"
    )
    parser.add_argument(
        "--no-instrument", action="store_true", help="run run_extract without timing its mapper and writer"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    return parser.parse_args(argv)


def set_up(args: argparse.Namespace) -> Bench:
    """Resolve the config and give torch the threads run_extract would, so each part is timed with the
    resources it has inside the pipeline; record the machine the figures come from."""
    config = load_config(args.config, args.overrides)
    runtime = config["runtime"]
    feats = config["features"]
    if args.threads:
        runtime["torch_threads"] = args.threads
    workers, prefetch = extract_stage.decode_parallelism(runtime)
    batch_videos = int(runtime["batch_videos"])
    # The encoders get the threads that run_extract gives them on this CPU, so each part is timed
    # with the resources it has inside the pipeline.
    torch.set_num_threads(int(runtime.get("torch_threads") or max(1, extract_stage.available_cores() - workers)))
    frames_t = int(feats["frames"])

    tmp = Path(tempfile.mkdtemp(prefix="gais-extract-bench-"))
    results: dict = {
        "config": str(config.get("name", args.config)),
        "config_arg": args.config,
        "overrides": args.overrides,
        "runtime": runtime,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "threads_arg": args.threads,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cuda": torch.cuda.is_available(),
        "load_average_start": os.getloadavg(),
        "clip_model": feats["clip"]["model"],
        "clip_pretrained": feats["clip"]["pretrained"],
        "audio_encoder": feats["audio"]["encoder"],
    }
    return Bench(args, config, workers, prefetch, batch_videos, frames_t, tmp, results)


def print_banner(bench: Bench) -> None:
    """Say up front what is measured and on what, and warn where the paper config is only approximated."""
    feats, results = bench.feats, bench.results
    console.print(
        f"[bold]extract bench[/bold] config={results['config']} "
        f"clip={feats['clip']['model']}/{feats['clip']['pretrained']} "
        f"audio={feats['audio']['encoder']} T={bench.frames_t}  torch threads={results['torch_threads']} "
        f"(interop {results['torch_interop_threads']}, --threads {bench.args.threads})  "
        f"cpu_count={results['cpu_count']} affinity={results['cpu_affinity']}  cuda={results['cuda']}"
    )
    console.print(f"runtime: {bench.runtime}")
    if feats["clip"]["model"] == "ViT-B-32" and feats["audio"]["encoder"] == "logmel":
        console.print(
            "[yellow]note: ViT-B-32 with random weights (same cost as pretrained); audio is logmel, not Whisper "
            "(Whisper weights are not available offline here), so the audio cost of the paper config is NOT measured"
        )


def find_videos(bench: Bench) -> tuple[Path, list[VideoRef], list[VideoRef]]:
    """The videos every measure runs on (generated, untimed, unless --media names a folder), and the
    few that the warm-ups use. Returns (media folder, all refs, warm-up refs)."""
    args, results = bench.args, bench.results
    if args.media:
        media = args.media
    else:
        media = bench.tmp / "videos"
        media.mkdir()
        start = time.perf_counter()
        width, height = (int(v) for v in args.size.lower().split("x"))
        jobs = [
            (media / f"v{i:04d}.mp4", args.seconds, i, width, height, 25, args.audio_rate, args.x264_preset)
            for i in range(args.videos)
        ]
        if args.gen_workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(args.gen_workers) as pool:
                list(pool.map(make_video, *zip(*jobs)))
        else:
            for job in jobs:
                make_video(*job)
        console.print(
            f"generated {args.videos} videos of {args.seconds:g} s in {time.perf_counter() - start:.1f} s (not timed)"
        )
    refs, problems = discover(media)
    if problems:
        console.print(f"[yellow]{len(problems)} discovery problems: {problems[:3]}")
    count = len(refs)
    results["videos"] = count
    results["video_seconds"] = args.seconds if not args.media else None
    results["media_bytes_per_video"] = sum(r.size for r in refs) / max(count, 1)
    warm = refs[: max(1, min(args.warmup_videos, count))]
    return media, refs, warm


def load_models(bench: Bench) -> Models:
    """Load the encoders the way run_extract does, timing the load: the pipeline figure excludes it."""
    runtime, feats = bench.runtime, bench.feats
    device = resolve_device(runtime["device"])
    precision = autocast_dtype(device, runtime["precision"])
    models_dir = bench.tmp / "models"
    models_dir.mkdir()
    start = time.perf_counter()
    clip = load_clip(feats["clip"], models_dir, device)
    audio = make_audio_encoder(feats["audio"], device, precision, int(runtime["audio_batch"]))
    bench.results["model_load_s"] = time.perf_counter() - start
    spec = DecodeSpec(bench.frames_t, clip.image_size, audio.sample_rate, runtime["decoder"], audio.frontend)
    mapper = FeatureMapper(clip, audio, device, precision, float(feats["audio"].get("min_coverage", 0.5)))
    bench.results["image_size"], bench.results["embed_dim"], bench.results["audio_dim"] = (
        clip.image_size,
        clip.embed_dim,
        audio.dim,
    )
    return Models(models_dir, clip, audio, spec, mapper)


def measure_decode(bench: Bench, models: Models, refs: list[VideoRef], warm: list[VideoRef]) -> list[DecodedVideo]:
    """Decode-only throughput with the pipeline's workers and prefetch; the decoded videos of the last run
    are returned so the encode-only measure sees exactly the same inputs."""
    for _ in decoded_stream(warm, models.spec, bench.workers, bench.prefetch):
        pass
    decode_runs, first_items = [], []
    for _ in range(bench.args.repeat):
        decoded: list[DecodedVideo] = []
        first_item = None
        start = time.perf_counter()
        for item in decoded_stream(refs, models.spec, bench.workers, bench.prefetch):
            if first_item is None:
                first_item = time.perf_counter() - start
            if isinstance(item, Problem):
                console.print(f"[red]decode problem[/red] {item}")
            else:
                decoded.append(item)
        decode_runs.append(time.perf_counter() - start)
        first_items.append(first_item)
    decode_s = min(decode_runs)
    bench.results.update(
        decode_s=decode_s,
        decode_runs_s=decode_runs,
        decode_videos_per_s=len(refs) / decode_s,
        decode_first_item_s=first_items[decode_runs.index(decode_s)],
    )
    bench.results["decoder_used"] = sorted({d.frames.decoder for d in decoded})
    return decoded


def measure_decode_steps(bench: Bench, models: Models, warm: list[VideoRef]) -> None:
    """Serial per-step breakdown of decoding (in this process, 1 torch thread like a worker): shows which
    step to speed up when decoding is the bottleneck."""
    clip, audio = models.clip, models.audio
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = {"probe": 0.0, "frames": 0.0, "soundtrack": 0.0, "audio_frontend": 0.0}
    for ref in warm:
        t0 = time.perf_counter()
        info = probe(ref.path)
        t1 = time.perf_counter()
        sample_frames(ref.path, info, bench.frames_t, clip.image_size, bench.runtime["decoder"])
        t2 = time.perf_counter()
        sound, _ = decode_soundtrack(ref.path, info, audio.sample_rate)
        t3 = time.perf_counter()
        if sound is not None:
            audio.frontend(sound.samples)
        t4 = time.perf_counter()
        for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[key] += value
    torch.set_num_threads(threads)
    bench.results["decode_steps_ms_per_video"] = {k: 1000 * v / len(warm) for k, v in steps.items()}


def measure_encode(bench: Bench, models: Models, decoded: list[DecodedVideo], warm: list[VideoRef]) -> None:
    """Encode-only throughput on videos already in memory, in the pipeline's batches, with the image tower
    timed alone; also the raw bytes of one row, before the shard's compression."""
    mapper, results = models.mapper, bench.results
    batches = [decoded[i : i + bench.batch_videos] for i in range(0, len(decoded), bench.batch_videos)]
    mapper(decoded[: len(warm)])  # warm-up
    encode_runs, image_runs = [], []
    for _ in range(bench.args.repeat):
        start = time.perf_counter()
        rows: list[FeatureRow] = []
        for batch in batches:
            rows.extend(mapper(batch))
        encode_runs.append(time.perf_counter() - start)
        start = time.perf_counter()  # the image tower alone, same batches
        for batch in batches:
            mapper.encode_images(np.concatenate([v.frames.pixels for v in batch]))
        image_runs.append(time.perf_counter() - start)
    encode_s, image_s = min(encode_runs), min(image_runs)
    results.update(
        encode_s=encode_s,
        encode_runs_s=encode_runs,
        encode_frames_per_s=len(decoded) * bench.frames_t / encode_s,
        encode_videos_per_s=len(decoded) / encode_s,
        encode_image_tower_s=image_s,
        encode_rest_s=max(0.0, encode_s - image_s),
    )
    sizes = row_bytes(rows[0])
    results["raw_bytes_per_row"] = sum(sizes.values())
    results["raw_bytes_per_row_fields"] = sizes
    results["raw_feature_bytes_per_row"] = sizes["frame_features"] + sizes["audio_features"]


def run_pipeline(bench: Bench, models: Models, media: Path, warm: list[VideoRef]) -> tuple:
    """run_extract after a warm-up, each repeat into a fresh workdir seeded with the models already made.
    Returns the fastest run as (summary, wall seconds, inner timings, workdir) and every run's seconds."""
    quiet = Console(stderr=True, quiet=True)
    warm_dir = bench.tmp / "work-warmup"
    seed_models(models.models_dir, warm_dir)
    extract_stage.run_extract(
        write_list(bench.tmp / "warm.txt", warm), warm_dir, bench.config, console=quiet, show_progress=False
    )
    best = None
    pipeline_runs = []
    for k in range(bench.args.repeat):
        run_dir = bench.tmp / f"work-{k}"
        seed_models(models.models_dir, run_dir)
        gc.collect()
        with instrumented_pipeline(not bench.args.no_instrument) as timings:
            start = time.perf_counter()
            run_summary = extract_stage.run_extract(
                media, run_dir, bench.config, console=Console(stderr=True), show_progress=False
            )
            run_wall = time.perf_counter() - start
        pipeline_runs.append(run_summary.seconds)
        if best is None or run_summary.seconds < best[0].seconds:
            best = (run_summary, run_wall, timings, run_dir)
    return best, pipeline_runs


def measure_pipeline(bench: Bench, models: Models, media: Path, warm: list[VideoRef]) -> None:
    """The full pipeline against the two parts alone (the overlap ratio), and what its shards store per video."""
    results = bench.results
    (summary, wall, inner, work), pipeline_runs = run_pipeline(bench, models, media, warm)
    pipeline_s = summary.seconds
    results.update(
        pipeline_s=pipeline_s,
        pipeline_runs_s=pipeline_runs,
        pipeline_wall_s=wall,
        pipeline_setup_s=wall - pipeline_s,
        pipeline_videos_per_s=summary.extracted / pipeline_s if pipeline_s else 0.0,
        pipeline_extracted=summary.extracted,
        pipeline_failed=summary.failed,
        pipeline_warned=summary.warned,
        ratio=pipeline_s / max(results["decode_s"], results["encode_s"]),
        ratio_target=1.15,
        ideal_serial_s=results["decode_s"] + results["encode_s"],
    )
    if inner:
        results["pipeline_main_encode_s"] = inner["encode_s"]
        results["pipeline_main_write_s"] = inner["write_s"]
        results["pipeline_main_wait_s"] = pipeline_s - inner["encode_s"] - inner["write_s"]
    shard_files = sorted((work / "features").glob("*.h5"))
    shard_bytes = sum(f.stat().st_size for f in shard_files)
    results["shards"] = len(shard_files)
    results["stored_bytes_per_video"] = shard_bytes / max(summary.extracted, 1)
    paper_shape = bench.frames_t * 512 * 2 * 2  # T x 512 fp16, both modalities
    results["paper_shape_feature_bytes"] = paper_shape
    results["raw_bytes_per_row_at_D512"] = (
        results["raw_bytes_per_row"] - results["raw_feature_bytes_per_row"] + paper_shape
    )
    results["bytes_target"] = 32 * 1024


def measure_table(bench: Bench) -> Table:
    """The throughput rows of the report: each measure, the decode breakdown and the overlap ratio."""
    r = bench.results
    table = Table(
        title=f"extract bench: {r['config']} ({r['clip_model']}/{r['clip_pretrained']}, audio {r['audio_encoder']}), "
        f"{r['videos']} videos, T={bench.frames_t}, D={r['embed_dim']}, Da={r['audio_dim']}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("detail")
    table.add_row(
        "decode-only",
        f"{r['decode_videos_per_s']:.2f} videos/s",
        f"{r['decode_s']:.2f} s, workers={bench.workers} prefetch={bench.prefetch}, "
        f"first item {r['decode_first_item_s']:.2f} s, decoder {','.join(r['decoder_used'])}",
    )
    steps = r["decode_steps_ms_per_video"]
    table.add_row("  serial steps", "ms/video", ", ".join(f"{k} {v:.0f}" for k, v in steps.items()))
    table.add_row(
        "encode-only",
        f"{r['encode_frames_per_s']:.1f} frames/s",
        f"{r['encode_s']:.2f} s ({r['encode_videos_per_s']:.2f} videos/s), batch {bench.batch_videos}; image tower "
        f"{r['encode_image_tower_s']:.2f} s, audio+pool+rest {r['encode_rest_s']:.2f} s",
    )
    table.add_row(
        "pipeline",
        f"{r['pipeline_videos_per_s']:.2f} videos/s",
        f"{r['pipeline_s']:.2f} s (+{r['pipeline_setup_s']:.1f} s model load/setup), {r['pipeline_extracted']} "
        f"extracted, {r['pipeline_failed']} failed",
    )
    if "pipeline_main_encode_s" in r:
        table.add_row(
            "  main process",
            "",
            f"encoding {r['pipeline_main_encode_s']:.2f} s, writing {r['pipeline_main_write_s']:.2f} s, "
            f"waiting for decode {r['pipeline_main_wait_s']:.2f} s",
        )
    ok = "OK" if r["ratio"] <= r["ratio_target"] else "MISSED"
    table.add_row(
        "ratio",
        f"{r['ratio']:.2f}",
        f"pipeline / max(decode, encode); target <= 1.15: {ok}; "
        f"decode+encode serial would be {r['ideal_serial_s']:.2f} s",
    )
    return table


def report(bench: Bench) -> None:
    """Print the figures as one table: the measures, then storage and the conditions they were taken under."""
    r = bench.results
    table = measure_table(bench)
    table.add_row("stored bytes/video", f"{r['stored_bytes_per_video']:.0f}", f"{r['shards']} shard(s) in features/")
    table.add_row(
        "raw bytes/row",
        f"{r['raw_bytes_per_row']}",
        f"features {r['raw_feature_bytes_per_row']}; at D=512 fp16 both: {r['raw_bytes_per_row_at_D512']} "
        f"(target <= {r['bytes_target']}: {'OK' if r['raw_bytes_per_row_at_D512'] <= r['bytes_target'] else 'MISSED'})",
    )
    table.add_row(
        "threads",
        f"{r['torch_threads']}",
        f"cpu_count {r['cpu_count']}, affinity {r['cpu_affinity']}, --threads {r['threads_arg']}",
    )
    table.add_row(
        "repeats",
        f"{bench.args.repeat}",
        "best of; runs (s): decode "
        + " ".join(f"{x:.2f}" for x in r["decode_runs_s"])
        + ", encode "
        + " ".join(f"{x:.2f}" for x in r["encode_runs_s"])
        + ", pipeline "
        + " ".join(f"{x:.2f}" for x in r["pipeline_runs_s"]),
    )
    table.add_row(
        "load average",
        "",
        f"start {r['load_average_start'][0]:.2f}, end {r['load_average_end'][0]:.2f} "
        "(other processes on this machine distort the figures)",
    )
    console.print(table)


def write_json(path: Path | None, results: dict) -> None:
    """Keep the figures for BENCHMARKS.md and later comparisons (--json)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
        console.print(f"figures written to {path}")


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = set_up(args)
    print_banner(bench)
    try:
        media, refs, warm = find_videos(bench)
        models = load_models(bench)
        decoded = measure_decode(bench, models, refs, warm)
        measure_decode_steps(bench, models, warm)
        measure_encode(bench, models, decoded, warm)
        del decoded
        gc.collect()
        measure_pipeline(bench, models, media, warm)
    finally:
        if args.keep:
            console.print(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    bench.results["load_average_end"] = os.getloadavg()
    if torch.cuda.is_available():  # this process's peak: the warm-ups, the encode-only pass and the pipeline
        bench.results["cuda_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        bench.results["cuda_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    report(bench)
    write_json(args.json, bench.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

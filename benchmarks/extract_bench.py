"""The ceilings of the extract stage, side by side on the same clips: how far each layer is from the one below it.

    .venv/bin/python benchmarks/extract_bench.py --json benchmarks/results/extract_ceilings.json
    .venv/bin/python benchmarks/extract_bench.py --set runtime.decode_workers=2 --only msrvtt
    .venv/bin/python benchmarks/extract_bench.py --paper --only msrvtt --clips 6
    .venv/bin/python benchmarks/extract_bench.py --small --media /tmp/m --json /tmp/f.json   (what CI runs)

Only the first makes clips (about 5 minutes on 2 cores for the default counts); the figures take under 2 minutes.

Clip sets (made once into --media, reused when present; making them is never timed), all H.264 (libx264)
with stereo AAC at 44.1 kHz, a moving pattern with a little noise, a keyframe every --keyint frames:
- msrvtt: MSR-VTT-like, 320x240, 15 s at 30 fps;
- 720p: 1280x720, 10 s at 30 fps;
- long: 320x240, 5 minutes at 30 fps (the length check).

Measures on each set, each as videos/s and per core:
1. ffmpeg: `ffmpeg -threads 1 -i CLIP -f null -`, clip after clip: every frame and the whole soundtrack decoded
   on one core, the physical limit of CPU decoding (CPU seconds from `-benchmark`, else from the children's rusage);
2. decode-only: `DecodePool` with the config's decode workers and its spec (`decode_spec`) after a warm-up on
   2 clips; per worker, per core (the workers' CPU seconds: a lone worker decodes on several threads), and the
   per-step seconds the workers measured;
3. null pipeline: `run_extract` with a mapper that makes zero rows of the right shape without a model, the
   CPU-side ceiling of the pipeline (its steady videos/s leaves start-up out);
4. pipeline: `python -m gais_pipe extract --json` in a fresh process, as a user runs it, into a workdir whose
   model checkpoint was made and hashed by a first run on one clip; start-up counts from the process's start.
With --paper, measure 4 runs again with the paper config (random ViT-B-32, a random Whisper-base saved once
into --media) on a few msrvtt clips: its start-up has a target.

Ratios and their targets: decode-only per core / ffmpeg per core >= 0.7 (msrvtt); null pipeline steady /
decode-only steady >= 0.9; paper start-up <= 10 s to the first video encoded; decode-only seconds of the long set /
seconds of as many msrvtt clips <= 2.0. Other processes on the machine distort every figure: the load average
is recorded before and after. This is a measurement, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.table import Table

# Multiprocessing runs this file again, as __mp_main__, in every decode worker a DecodePool starts (the
# forkserver does not preload __main__: Python 3.11 ignores that preload), and nothing here is used there.
# Importing torch there would add ~2 s to each pool's start that `python -m gais_pipe` does not pay.
if __name__ != "__mp_main__":
    import av
    import numpy as np
    import torch

    from gais_pipe import extract_stage
    from gais_pipe.config import Config, load_config
    from gais_pipe.extract.decode_pool import DecodePool
    from gais_pipe.extract.discover import Problem, VideoRef
    from gais_pipe.extract.mapper import FeatureRow, feature_row
    from gais_pipe.extract.reader import DECODE_STEPS, DecodedVideo

console = Console(width=None if sys.stdout.isatty() else 150)  # a log file gets the whole table
ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"decode_vs_ffmpeg": 0.7, "null_vs_decode": 0.9, "paper_startup_s": 10.0, "long_vs_short": 2.0}
PIPELINE_TIMEOUT_S = 3600  # one `gais_pipe extract` process; a hang must not hold the benchmark for ever


# --- clips ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSet:
    """One kind of clip, and how many: the folder name says how they were made, so a change makes new ones."""

    name: str
    width: int
    height: int
    seconds: float
    fps: int
    count: int
    preset: str
    keyint: int
    seed: int  # the first clip's seed: each set looks different

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.width}x{self.height}-{self.seconds:g}s-{self.fps}fps-{self.preset}-k{self.keyint}"


def clip_sets(args: argparse.Namespace) -> list[ClipSet]:
    """The sets --only asks for, at full size or (--small) tiny enough for a test."""
    preset = "ultrafast" if args.small else args.preset
    short, long_count = (2, 2) if args.small else (args.clips, args.long_clips)
    sets = {
        "msrvtt": ClipSet("msrvtt", 320, 240, 15.0, 30, short, preset, args.keyint, 0),
        "720p": ClipSet("720p", 1280, 720, 10.0, 30, short, preset, args.keyint, 1000),
        "long": ClipSet("long", 320, 240, 300.0, 30, long_count, preset, args.keyint, 2000),
    }
    if args.small:  # every set small; the long one still several times the short ones
        sets = {
            name: ClipSet(name, 160, 120, 20.0 if name == "long" else 2.0, 30, s.count, preset, s.keyint, s.seed)
            for name, s in sets.items()
        }
    return [sets[name] for name in args.only]


def moving_frame(i: int, fps: int, seed: int, xs: np.ndarray, ys: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Frame i: drifting gradients, a square that wanders and blinks, and noise: motion for the encoder to code."""
    height, width = len(ys), len(xs)
    phase = i / fps
    image = noise.copy()
    image[..., 0] += 127 + 127 * np.sin(xs / 23.0 + phase * 3.0 + seed)[None, :]
    image[..., 1] += 127 + 127 * np.sin(ys / 17.0 - phase * 2.0)[:, None]
    a, b = xs / 31.0 + phase * 5.0, ys / 31.0  # sin(a + b) from 1-D parts
    image[..., 2] += 127 + 127 * (np.sin(a)[None, :] * np.cos(b)[:, None] + np.cos(a)[None, :] * np.sin(b)[:, None])
    side = max(8, height // 6)
    cx = int((width - side) * (0.5 + 0.5 * math.sin(phase + seed)))
    cy = int((height - side) * (0.5 + 0.5 * math.cos(phase * 1.3)))
    image[cy : cy + side, cx : cx + side] = (255 * ((i // 10) % 2), 80, 200)
    return np.clip(image, 0, 255).astype(np.uint8)


def stereo_tone(start: int, count: int, rate: int, seed: int) -> np.ndarray:
    """[2, count] float32: a different tone in each ear, so the channels are not one signal twice."""
    t = (start + np.arange(count)) / rate
    left = 0.3 * np.sin(2 * np.pi * (220.0 + 40.0 * (seed % 16)) * t)
    right = 0.2 * np.sin(2 * np.pi * (330.0 + 25.0 * (seed % 16)) * t)
    return np.stack([left, right]).astype(np.float32)


def make_video(
    path: Path,
    seconds: float,
    seed: int,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    audio_rate: int = 44100,
    preset: str = "medium",
    stereo: bool = True,
    keyint: int = 250,
) -> None:
    """One H.264 + AAC mp4, written under a temporary name and renamed, so a clip that exists is whole."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    layout = "stereo" if stereo else "mono"
    partial = path.with_name(path.name + ".partial")
    with av.open(str(partial), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": preset, "g": str(keyint)}
        audio = container.add_stream("aac", rate=audio_rate, layout=layout)
        xs, ys = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        noise = [rng.normal(0, 6, (height, width, 3)).astype(np.float32) for _ in range(16)]  # cycled: cheap
        chunk, audio_pos, audio_total = 1024, 0, int(seconds * audio_rate)  # 1024: AAC's frame size
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(moving_frame(i, fps, seed, xs, ys, noise[i % 16]), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
            while audio_pos < min(audio_total, (i + 1) * audio_rate // fps):  # keep the streams interleaved
                n = min(chunk, audio_total - audio_pos)
                samples = stereo_tone(audio_pos, n, audio_rate, seed)
                aframe = av.AudioFrame.from_ndarray(samples if stereo else samples[:1], format="fltp", layout=layout)
                aframe.sample_rate, aframe.pts, aframe.time_base = audio_rate, audio_pos, Fraction(1, audio_rate)
                container.mux(audio.encode(aframe))
                audio_pos += n
        for stream in (video, audio):
            container.mux(stream.encode(None))
    partial.rename(path)


def clip_paths(media: Path, clip_set: ClipSet) -> list[Path]:
    return [media / clip_set.folder / f"clip-{i:03d}.mp4" for i in range(clip_set.count)]


def ensure_clips(media: Path, sets: list[ClipSet], processes: int) -> dict[str, list[Path]]:
    """Every set's clips, making the missing ones in parallel processes (not timed). Returns name -> paths."""
    missing = []
    for clip_set in sets:
        (media / clip_set.folder).mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(clip_paths(media, clip_set)):
            if not path.exists():
                s = clip_set
                missing.append((path, s.seconds, s.seed + i, s.width, s.height, s.fps, 44100, s.preset, True, s.keyint))
    if missing:
        start = time.perf_counter()
        with ProcessPoolExecutor(max(1, min(processes, len(missing)))) as pool:
            list(pool.map(make_video, *zip(*missing)))
        console.print(f"made {len(missing)} clips in {time.perf_counter() - start:.0f} s (not timed) under {media}")
    return {clip_set.name: clip_paths(media, clip_set) for clip_set in sets}


def refs_of(paths: list[Path]) -> list[VideoRef]:
    """VideoRefs as `discover` makes them from a list file of absolute paths."""
    refs = []
    for path in paths:
        stat = path.stat()
        refs.append(VideoRef(str(path), path, stat.st_size, stat.st_mtime))
    return refs


def write_list(path: Path, clips: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{os.path.abspath(clip)}\n" for clip in clips))  # links stay links: their own ids
    return path


def warm_list(folder: Path, clip: Path) -> Path:
    """A list of one video that is none of the measured ones (a link under another name), so that the measured
    run after it in the same workdir skips nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"warm-up-{clip.name}"
    if not link.exists():
        link.symlink_to(clip.resolve())
    return write_list(folder / "warm-up.txt", [link])


# --- measure 1: ffmpeg, one core ----------------------------------------------------------------
BENCH_LINE = re.compile(r"bench: utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_decode(ffmpeg: str, clip: Path) -> tuple[float, float, float | None]:
    """(wall seconds, CPU seconds of the whole process, CPU seconds of decoding alone from `-benchmark` or None)
    of decoding one clip whole on one thread. `-benchmark` leaves out the process's start and opening the file."""
    command = [ffmpeg, "-nostdin", "-hide_banner", "-benchmark", "-threads", "1", "-i", str(clip), "-f", "null", "-"]
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall, process_cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_before
    bench = BENCH_LINE.search(done.stderr)
    return wall, process_cpu, float(bench[1]) + float(bench[2]) if bench else None


def measure_ffmpeg(clips: list[Path]) -> dict:
    """The physical limit of CPU decoding: every frame and sample of each clip, one thread, clip after clip.
    Per core counts CPU seconds: `-benchmark`'s utime + stime where ffmpeg prints them, else the process's."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return {"skipped": "ffmpeg is not on PATH"}
    ffmpeg_decode(ffmpeg, clips[0])  # warm-up: the binary and its libraries in the page cache
    runs = [ffmpeg_decode(ffmpeg, clip) for clip in clips]
    count = len(clips)
    wall, process_cpu = sum(r[0] for r in runs), sum(r[1] for r in runs)
    benchmark_cpu = sum(r[2] for r in runs) if all(r[2] is not None for r in runs) else None
    cpu = benchmark_cpu if benchmark_cpu is not None else process_cpu
    return {
        "clips": count,
        "seconds_per_clip": wall / count,
        "process_cpu_seconds_per_clip": process_cpu / count,
        "benchmark_cpu_seconds_per_clip": benchmark_cpu / count if benchmark_cpu is not None else None,
        "cpu_seconds_per_clip": cpu / count,
        "cpu_source": "ffmpeg -benchmark utime+stime" if benchmark_cpu is not None else "rusage of the process",
        "videos_per_s": count / wall,
        "videos_per_s_per_core": count / cpu,
        "videos_per_s_per_core_whole_process": count / process_cpu,
    }


# --- measure 2: decode-only -------------------------------------------------------------------------
def drain(pool: DecodePool) -> tuple[list[DecodedVideo], list[Problem], list[float]]:
    """Everything the pool decodes: (videos, problems, perf_counter() when each result came)."""
    videos, problems, arrivals = [], [], []
    for item in pool:
        arrivals.append(time.perf_counter())
        (videos if isinstance(item, DecodedVideo) else problems).append(item)
    return videos, problems, arrivals


def descendants_cpu_seconds() -> float | None:
    """CPU seconds of this process's live descendants (Linux /proc; None elsewhere). The decode workers are
    children of the forkserver, so this process's RUSAGE_CHILDREN never counts them."""
    parents, cpu, ticks = {}, {}, os.sysconf("SC_CLK_TCK")
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks  # ppid, utime + stime
    family, grown = {os.getpid()}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in family} - family
        family |= found
        grown = bool(found)
    return sum(cpu[pid] for pid in family - {os.getpid()})


def measure_decode_only(clips: list[Path], config: Config, warm_clips: int = 2) -> dict:
    """The pipeline's decoders alone: its workers, its queue depth and its spec, after a warm-up run that starts
    the forkserver (as a long run amortises it). Per core divides by the CPU seconds the workers used: a worker
    decodes on `decoder_threads` threads, so per worker is per core only where that is 1."""
    runtime = config["runtime"]
    workers, queued = extract_stage.decode_parallelism(runtime)
    spec = extract_stage.decode_spec(config, workers)
    timeout = float(runtime["decode_timeout"])
    with DecodePool(refs_of(clips[:warm_clips]), spec, workers, queued, timeout) as pool:
        drain(pool)
    refs = refs_of(clips)
    cpu_before, main_before, start = descendants_cpu_seconds(), time.process_time(), time.perf_counter()
    with DecodePool(refs, spec, workers, queued, timeout) as pool:
        videos, problems, arrivals = drain(pool)
        seconds = time.perf_counter() - start
        cpu_after = descendants_cpu_seconds()  # before the pool closes: its workers are still alive
        counts = asdict(pool.counts)
    main_cpu = time.process_time() - main_before
    worker_cpu = cpu_after - cpu_before if workers and cpu_before is not None and cpu_after is not None else None
    if not workers:  # decoded inline: this process's CPU is the decoders'
        worker_cpu = main_cpu
    after_first = arrivals[-1] - arrivals[0]  # the steady rate, as the pipeline's leaves its first batch out
    steps = {step: sum(v.seconds.get(step, 0.0) for v in videos) for step in DECODE_STEPS}
    decoded = len(videos)
    return {
        "clips": len(refs),
        "decoded": decoded,
        "problems": [f"{p.id}: {p.stage}: {p.reason}" for p in problems],
        "workers": workers,
        "queued_per_worker": queued,
        "decoder_threads": spec.threads,
        "seconds": seconds,
        "first_video_s": arrivals[0] - start,
        "videos_per_s": decoded / seconds,
        "steady_videos_per_s": (len(arrivals) - 1) / after_first if after_first > 0 else None,
        "videos_per_s_per_worker": decoded / seconds / max(1, workers),
        "worker_cpu_seconds_per_clip": worker_cpu / decoded if worker_cpu else None,
        "videos_per_s_per_core": decoded / worker_cpu if worker_cpu else None,
        "main_cpu_seconds": main_cpu,
        "steps_s": steps,
        "busy_seconds_per_clip": sum(steps.values()) / max(1, decoded),
        "pool": counts,
        "pixels_bytes_per_clip": videos[0].frames.pixels.nbytes if videos else 0,
    }


# --- measure 3: the pipeline with encoders that do nothing ------------------------------------------
def null_row(video: DecodedVideo, width: int, audio_width: int) -> FeatureRow:
    """A row shaped like FeatureMapper's, all zeros: what writing costs without a model."""
    count = video.frames.pixels.shape[0]
    zeros = np.zeros((count, width), np.float16)
    return feature_row(video, zeros, np.zeros((count, audio_width), np.float16), np.zeros(count, bool))


def null_mapper(encoders: extract_stage.Encoders, config: Config) -> Callable[[list[DecodedVideo]], list[FeatureRow]]:
    width, audio_width = encoders.clip.embed_dim, encoders.audio.dim
    return lambda batch: [null_row(video, width, audio_width) for video in batch]


def measure_null_pipeline(clips: list[Path], work: Path, config: Config) -> dict:
    """run_extract with the null mapper, in this process, after a warm-up run that makes the checkpoint."""
    quiet = Console(stderr=True, quiet=True)
    workdir = work / "workdir"
    extract_stage.run_extract(warm_list(work, clips[0]), workdir, config, console=quiet, show_progress=False)
    summary = extract_stage.run_extract(
        write_list(work / "clips.txt", clips),
        workdir,
        config,
        console=quiet,
        show_progress=False,
        make_mapper=null_mapper,
    )
    account = summary.account.as_dict()
    cores = extract_stage.available_cores()
    return {
        "clips": len(clips),
        "extracted": summary.extracted,
        "failed": summary.failed,
        "seconds": summary.seconds,
        "videos_per_s": summary.videos_per_second,
        "videos_per_s_per_core": summary.videos_per_second / cores,
        "steady_videos_per_s": account["steady_videos_per_s"],
        "cores": cores,
        "account": account,
    }


# --- measure 4: the real pipeline, a fresh process ----------------------------------------------------
def extract_command(listing: Path, workdir: Path, config_name: str, overrides: list[str]) -> list[str]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    head = [sys.executable, "-m", "gais_pipe", "extract", str(listing), "-w", str(workdir), "--config", config_name]
    return [*head, *sets, "--quiet", "--json"]


def run_extract_process(command: list[str]) -> tuple[dict, float]:
    """(the JSON `extract --json` printed, wall seconds of the whole process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PIPELINE_TIMEOUT_S, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} printed no JSON:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1]), wall


def measure_pipeline(clips: list[Path], work: Path, config_name: str, overrides: list[str]) -> dict:
    """`gais_pipe extract` as a user runs it: a first process on one other clip makes and hashes the
    checkpoint, then the measured process extracts the clips into the same workdir."""
    workdir = work / "workdir"
    warm_out, warm_wall = run_extract_process(
        extract_command(warm_list(work, clips[0]), workdir, config_name, overrides)
    )
    command = extract_command(write_list(work / "clips.txt", clips), workdir, config_name, overrides)
    out, wall = run_extract_process(command)
    account = out["account"] or {}
    cores = extract_stage.available_cores()
    return {
        "command": " ".join(command),
        "clips": len(clips),
        "extracted": out["extracted"],
        "failed": out["failed"],
        "skipped": out["skipped"],
        "seconds": out["seconds"],
        "process_wall_s": wall,
        "videos_per_s": out["videos_per_s"],
        "videos_per_s_per_core": out["videos_per_s"] / cores,
        "videos_per_s_with_startup": out["extracted"] / wall,  # what a user sees, imports and model loading in
        "steady_videos_per_s": account.get("steady_videos_per_s"),
        "startup_s": account.get("startup_s"),
        "startup_parts_s": account.get("startup_parts_s"),
        "warm_up": {"process_wall_s": warm_wall, "startup_s": (warm_out["account"] or {}).get("startup_s")},
        "cores": cores,
        "account": account,
    }


WHISPER_RANDOM = """
import sys, torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
torch.manual_seed(0)
config = WhisperConfig(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                       decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80)
WhisperModel(config).save_pretrained(sys.argv[1])
WhisperFeatureExtractor(feature_size=80).save_pretrained(sys.argv[1])
"""


def random_whisper(media: Path) -> Path:
    """Whisper-base's shapes with random weights, saved once as HF does (as benchmarks/gpu_check.sh makes it)."""
    folder = media / "whisper-base-random"
    if not (folder / "model.safetensors").exists():
        done = subprocess.run([sys.executable, "-c", WHISPER_RANDOM, str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"making the random Whisper failed:\n{done.stderr[-3000:]}")
    return folder


def paper_overrides(media: Path, overrides: list[str]) -> list[str]:
    """The paper config without downloads: random ViT-B-32 and the random Whisper; the user's --set after them."""
    whisper = random_whisper(media)
    return ["features.clip.pretrained=random", f"features.audio.model={whisper}", *overrides]


# --- ratios -------------------------------------------------------------------------------------------
def ratio(name: str, value: float | None, target: float, at_least: bool, detail: str) -> dict:
    ok = None if value is None else (value >= target if at_least else value <= target)
    return {
        "name": name,
        "value": value,
        "target": f"{'>=' if at_least else '<='} {target:g}",
        "ok": ok,
        "detail": detail,
    }


def per_set_ratios(name: str, figures: dict) -> list[dict]:
    """decode-only against ffmpeg (the target is for msrvtt; the others are shown for comparison), and the null
    pipeline against decode-only."""
    found, decode = [], figures.get("decode_only", {})
    ffmpeg = figures.get("ffmpeg", {})
    if "videos_per_s_per_core" in ffmpeg and decode.get("videos_per_s_per_core"):
        value = decode["videos_per_s_per_core"] / ffmpeg["videos_per_s_per_core"]
        per_worker = decode["videos_per_s_per_worker"] / ffmpeg["videos_per_s_per_core"]
        whole = decode["videos_per_s_per_core"] / ffmpeg["videos_per_s_per_core_whole_process"]
        detail = f"per worker instead: {per_worker:.2f}; against ffmpeg's whole-process CPU: {whole:.2f}"
        if name != "msrvtt":
            detail += " (no target for this set)"
        item = ratio(
            f"{name}: decode-only per core / ffmpeg per core", value, TARGETS["decode_vs_ffmpeg"], True, detail
        )
        if name != "msrvtt":
            item.update(target=None, ok=None)
        found.append(item)
    null = figures.get("null_pipeline", {})
    if null.get("steady_videos_per_s") and decode.get("steady_videos_per_s"):
        value = null["steady_videos_per_s"] / decode["steady_videos_per_s"]
        overall = null["videos_per_s"] / decode["videos_per_s"]
        detail = f"both after their first result; overall videos/s (start-up in) / decode-only's: {overall:.2f}"
        found.append(
            ratio(f"{name}: null pipeline steady / decode-only", value, TARGETS["null_vs_decode"], True, detail)
        )
    return found


def long_vs_short(results: dict, msrvtt_same_count_s: float | None) -> dict | None:
    long_decode = results["sets"].get("long", {}).get("decode_only")
    if not long_decode or msrvtt_same_count_s is None:
        return None
    value = long_decode["seconds"] / msrvtt_same_count_s
    detail = f"{long_decode['seconds']:.2f} s for {long_decode['clips']} long clips / {msrvtt_same_count_s:.2f} s"
    return ratio("long / short: decode-only seconds, same count", value, TARGETS["long_vs_short"], False, detail)


def paper_startup(paper: dict | None) -> dict | None:
    if not paper:
        return None
    value = paper["startup_s"]
    detail = f"process start to the first video encoded; parts {paper['startup_parts_s']}"
    return ratio("paper: start-up to the first video encoded (s)", value, TARGETS["paper_startup_s"], False, detail)


# --- report -------------------------------------------------------------------------------------------
def figure(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ffmpeg_rows(ffmpeg: dict) -> list[tuple[str, str, str]]:
    if "skipped" in ffmpeg:
        return [("ffmpeg -threads 1", "skipped", ffmpeg["skipped"])]
    return [
        ("ffmpeg -threads 1", "videos/s", figure(ffmpeg["videos_per_s"])),
        ("", "per core (decode CPU s)", figure(ffmpeg["videos_per_s_per_core"])),
        ("", "s/clip wall", figure(ffmpeg["seconds_per_clip"], 3)),
        (
            "",
            "s/clip CPU: process, decode",
            f"{ffmpeg['process_cpu_seconds_per_clip']:.3f}, {ffmpeg['cpu_seconds_per_clip']:.3f}",
        ),
    ]


def decode_rows(decode: dict) -> list[tuple[str, str, str]]:
    per_clip = {step: 1000 * seconds / max(1, decode["decoded"]) for step, seconds in decode["steps_s"].items()}
    return [
        ("decode-only", "videos/s", figure(decode["videos_per_s"])),
        ("", "steady videos/s", figure(decode["steady_videos_per_s"])),
        ("", "per worker", figure(decode["videos_per_s_per_worker"])),
        ("", "per core (worker CPU s)", figure(decode["videos_per_s_per_core"])),
        ("", "workers x decoder threads", f"{decode['workers']} x {decode['decoder_threads']}"),
        *(("", f"{step} ms/clip", f"{ms:.0f}") for step, ms in per_clip.items()),
    ]


def null_rows(null: dict) -> list[tuple[str, str, str]]:
    return [
        ("null pipeline", "videos/s", figure(null["videos_per_s"])),
        ("", "steady videos/s", figure(null["steady_videos_per_s"])),
    ]


def pipeline_rows(pipe: dict, label: str = "pipeline") -> list[tuple[str, str, str]]:
    account = pipe["account"]
    encode = ", ".join(f"{k} {v:.1f}" for k, v in account.get("encode_s", {}).items())
    return [
        (label, "videos/s", figure(pipe["videos_per_s"])),
        ("", "steady videos/s", figure(pipe["steady_videos_per_s"])),
        ("", "videos/s, process wall", f"{figure(pipe['videos_per_s_with_startup'])} ({pipe['process_wall_s']:.1f} s)"),
        ("", "start-up s", figure(pipe["startup_s"], 1)),
        ("", "decode core-s", figure(sum(account.get("decode_s", {}).values()), 1)),
        ("", "waited for decoders s", figure(account.get("wait_for_decoders_s"), 1)),
        ("", "encode s", encode or "-"),
        ("", "write s", figure(account.get("write_s"))),
    ]


def measure_rows(figures: dict) -> list[tuple[str, str, str]]:
    """(measure, figure, text) for one set, from the physical limit up to the real pipeline."""
    rows = []
    for key, rows_of in (("ffmpeg", ffmpeg_rows), ("decode_only", decode_rows), ("null_pipeline", null_rows)):
        if key in figures:
            rows += rows_of(figures[key])
    return rows + (pipeline_rows(figures["pipeline"]) if "pipeline" in figures else [])


def sets_table(results: dict) -> Table:
    """One column per clip set; the measures' rows as the first set that has them orders them."""
    names = list(results["sets"])
    table = Table(title=f"extract ceilings: config {results['config']} {' '.join(results['overrides'])}")
    table.add_column("measure")
    table.add_column("figure")
    for name in names:
        clips = results["sets"][name]["clip_set"]
        size = f"{clips['count']} x {clips['seconds']:g} s {clips['width']}x{clips['height']}"
        table.add_column(f"{name} ({size})", justify="right")
    keyed = {}  # (measure, figure) -> set -> text; a blank measure belongs to the row above
    for name in names:
        measure = ""
        for label, what, text in measure_rows(results["sets"][name]):
            measure = label or measure
            keyed.setdefault((measure, what), {})[name] = text
    shown = None
    for (measure, what), texts in keyed.items():
        table.add_row(measure if measure != shown else "", what, *(texts.get(name, "") for name in names))
        shown = measure
    return table


def ratios_table(results: dict) -> Table:
    table = Table(title="ratios against their targets")
    for column in ("ratio", "value", "target", "verdict", "detail"):
        table.add_column(column)
    for item in results["ratios"]:
        verdict = {True: "[green]met", False: "[red]missed", None: ""}[item["ok"]]
        table.add_row(item["name"], figure(item["value"]), item["target"] or "", verdict, item["detail"])
    return table


def report(results: dict) -> None:
    console.print(sets_table(results))
    if results.get("paper"):
        paper = Table(title=f"paper config (random weights), {results['paper']['clips']} msrvtt clips")
        for column in ("measure", "figure", "value"):
            paper.add_column(column)
        for row in pipeline_rows(results["paper"], "pipeline (paper)"):
            paper.add_row(*row)
        console.print(paper)
    console.print(ratios_table(results))
    machine = results["machine"]
    console.print(
        f"{machine['cores']} cores, load average {machine['load_average_start'][0]:.2f} at the start and "
        f"{machine['load_average_end'][0]:.2f} at the end; {results['bench_seconds']:.0f} s in all"
    )


# --- the run ------------------------------------------------------------------------------------------
def versions() -> dict:
    ffmpeg = shutil.which("ffmpeg")
    ffmpeg_line = (
        subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0] if ffmpeg else None
    )
    return {
        "python": platform.python_version(),
        "av": av.__version__,
        "libavcodec": "{}.{}.{}".format(*av.library_versions["libavcodec"]),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "ffmpeg": ffmpeg_line,
    }


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "available_cores": extract_stage.available_cores(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_average_start": os.getloadavg(),
    }


def measure_set(clip_set: ClipSet, clips: list[Path], work: Path, config: Config, args: argparse.Namespace) -> dict:
    """The four measures on one set, in order from the physical limit up to the real pipeline."""
    figures: dict = {"clip_set": asdict(clip_set), "bytes_per_clip": sum(p.stat().st_size for p in clips) / len(clips)}
    steps = {
        "ffmpeg": lambda: measure_ffmpeg(clips),
        "decode_only": lambda: measure_decode_only(clips, config),
        "null_pipeline": lambda: measure_null_pipeline(clips, work / f"{clip_set.name}-null", config),
        "pipeline": lambda: measure_pipeline(clips, work / f"{clip_set.name}-pipeline", args.config, args.overrides),
    }
    figures["wall_s"] = {}
    for name, step in steps.items():
        console.print(f"[bold]{clip_set.name}[/bold]: {name} ...")
        start = time.perf_counter()
        figures[name] = step()
        figures["wall_s"][name] = time.perf_counter() - start
    return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="bundled config name or TOML path (measures 2 to 4)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable; the paper run gets them too)",
    )
    parser.add_argument("--only", nargs="+", choices=("msrvtt", "720p", "long"), default=["msrvtt", "720p", "long"])
    parser.add_argument("--clips", type=int, default=12, help="clips in the msrvtt and 720p sets")
    parser.add_argument("--long-clips", type=int, default=6, help="5-minute clips in the long set")
    parser.add_argument("--preset", default="medium", help="libx264 preset of the clips")
    parser.add_argument("--keyint", type=int, default=250, help="most frames between keyframes (x264's default: 250)")
    parser.add_argument("--media", type=Path, default=Path("bench-media"), help="where the clips are made and kept")
    parser.add_argument("--work", type=Path, help="workdirs of the pipeline runs (default: a temporary folder)")
    parser.add_argument("--paper", action="store_true", help="also the real pipeline with the paper config")
    parser.add_argument("--paper-clips", type=int, default=6, help="msrvtt clips of the paper run")
    parser.add_argument("--small", action="store_true", help="tiny clips (160x120, 2 s; long: 20 s), for a test")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the workdirs")
    args = parser.parse_args(argv)
    if args.paper and "msrvtt" not in args.only:
        parser.error("--paper runs on the msrvtt clips: include msrvtt in --only")
    return args


def run(args: argparse.Namespace, work: Path) -> dict:
    config = load_config(args.config, args.overrides)
    sets = clip_sets(args)
    results = {
        "config": str(config.get("name", args.config)),
        "overrides": args.overrides,
        "runtime": config["runtime"],
        "small": args.small,
        "machine": machine(),
        "versions": versions(),
    }
    clips = ensure_clips(args.media, sets, os.cpu_count() or 1)
    start = time.perf_counter()
    results["sets"] = {s.name: measure_set(s, clips[s.name], work, config, args) for s in sets}
    same_count_s = None
    if "long" in clips and "msrvtt" in clips:  # as many msrvtt clips as long ones, decoded alike
        same_count = clips["msrvtt"][: len(clips["long"])]
        same_count_s = (
            measure_decode_only(same_count, config)["seconds"] if len(same_count) == len(clips["long"]) else None
        )
    results["msrvtt_decode_only_same_count_s"] = same_count_s
    if args.paper:
        console.print("[bold]paper[/bold]: pipeline ...")
        paper_clips = clips["msrvtt"][: args.paper_clips]
        results["paper"] = measure_pipeline(
            paper_clips, work / "paper", "paper", paper_overrides(args.media, args.overrides)
        )
    ratios = [item for name, figures in results["sets"].items() for item in per_set_ratios(name, figures)]
    ratios += [item for item in (paper_startup(results.get("paper")), long_vs_short(results, same_count_s)) if item]
    results["ratios"] = ratios
    results["machine"]["load_average_end"] = os.getloadavg()
    results["bench_seconds"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.media = args.media.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="gais-extract-ceilings-"))
    try:
        results = run(args, work.resolve())
    finally:
        if args.keep or args.work:
            console.print(f"workdirs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

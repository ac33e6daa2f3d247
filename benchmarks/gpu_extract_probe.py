"""The extraction steps of benchmarks/gpu_check.sh, one subcommand each, every one writing one JSON file.

    python benchmarks/gpu_extract_probe.py prepare --scratch S --config paper --whisper-shape base ...
    python benchmarks/gpu_extract_probe.py decode  --scratch S --config paper --set ... --workers 14 --json d.json
    python benchmarks/gpu_extract_probe.py encode  --scratch S --config paper --set ... --json e.json
    python benchmarks/gpu_extract_probe.py extract --scratch S --kind msrvtt --config paper --set ... --json x.json
    python benchmarks/gpu_extract_probe.py search  --rows 1000000 --dim 512 --json s.json
    python benchmarks/gpu_extract_probe.py report  OUT SMALL

Kept apart from extract_bench.py on purpose: the GPU check must not break when that benchmark changes, and
every extraction it times is the CLI itself (`python -m gais_pipe extract`, started as a child process), so
that start-up, imports included, is what a user gets. Clips are generated before any clock starts, a few
distinct files per kind, hard-linked under many names (decoding a link costs what decoding a copy costs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np

KINDS = {"msrvtt": "MSR-VTT-like", "hd": "720p"}
TARGETS = {"msrvtt": 50.0, "hd": 15.0}  # videos/s the issue asks for on one H100/H200


# --- clips ----------------------------------------------------------------------------------------
def make_clip(path: Path, seconds: float, seed: int, width: int, height: int, fps: int, preset: str, kbps: int) -> None:
    """An H.264 clip at about `kbps` with stereo AAC at 44.1 kHz: a panning texture, a moving square, light
    noise and a tone that changes pitch. One x264 thread: the clips are made in parallel, one per core."""
    import av

    rng = np.random.default_rng(seed)
    frames, rate, chunk = int(round(seconds * fps)), 44100, 1024
    xs = np.arange(width + 2 * frames, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    texture = np.stack(
        [
            127 + 100 * np.sin(xs / (17 + seed % 7) + ys / 29),
            127 + 100 * np.sin(ys / 13 - xs / 41),
            127 + 100 * np.cos((xs + ys) / 23),
        ],
        axis=-1,
    ).astype(np.int16)
    noise = [rng.integers(-6, 7, (height, width, 3), dtype=np.int16) for _ in range(8)]
    side = max(8, height // 6)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt, video.bit_rate = width, height, "yuv420p", kbps * 1000
        video.options = {"preset": preset, "threads": "1"}
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        heard, total = 0, int(seconds * rate)
        for i in range(frames):
            image = texture[:, 2 * i : 2 * i + width] + noise[i % len(noise)]
            cx = int((width - side) * (0.5 + 0.5 * math.sin(i / fps + seed)))
            cy = int((height - side) * (0.5 + 0.5 * math.cos(1.3 * i / fps)))
            image[cy : cy + side, cx : cx + side] = (255 * ((i // 10) % 2), 80, 200)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
            while heard < min(total, (i + 1) * rate // fps):  # interleaved with the video, as a muxer writes
                n = min(chunk, total - heard)
                t = (heard + np.arange(n)) / rate
                tone = np.sin(2 * np.pi * (220 + 40 * seed + 30 * np.sin(t)) * t)
                samples = np.stack([0.3 * tone, 0.2 * tone + 0.02 * rng.standard_normal(n)]).astype(np.float32)
                sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                sound.sample_rate, sound.pts, sound.time_base = rate, heard, Fraction(1, rate)
                container.mux(audio.encode(sound))
                heard += n
        for stream in (video, audio):
            container.mux(stream.encode(None))


def _make_clip(job: tuple) -> float:
    start = time.perf_counter()
    make_clip(*job)
    return time.perf_counter() - start


def clip_folder(scratch: Path, kind: str) -> Path:
    return scratch / "clips" / kind


def whisper_folder(scratch: Path) -> Path:
    return scratch / "whisper-random"


def make_whisper(folder: Path, shape: str) -> None:
    """Whisper's shapes with random weights, saved as HF does (base: the paper's; tiny-test: for --small)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    width, layers, heads, ffn = (512, 6, 8, 2048) if shape == "base" else (64, 2, 2, 128)
    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=width,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        num_mel_bins=80,
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)


def prepare(args) -> dict:
    """Clips of both kinds (all cores), the random Whisper folder and the random CLIP checkpoint, made once."""
    scratch, cores = args.scratch, os.cpu_count() or 1
    report = {"preset": args.preset, "fps": args.fps, "workers": cores, "kinds": {}}
    start = time.perf_counter()
    jobs = []
    wanted = {k: v for k, v in vars(args).items() if k.startswith(("msrvtt", "hd", "fps", "preset"))}
    marker = scratch / "clips" / "made.json"
    made = marker.exists() and json.loads(marker.read_text()) == wanted  # a rerun (--only) keeps its clips
    if not made:
        shutil.rmtree(scratch / "clips", ignore_errors=True)
        for folder in scratch.glob("videos-*"):
            shutil.rmtree(folder)
    for kind, count, size, seconds, kbps in (
        ("msrvtt", args.msrvtt_distinct, args.msrvtt_size, args.msrvtt_seconds, args.msrvtt_kbps),
        ("hd", args.hd_distinct, args.hd_size, args.hd_seconds, args.hd_kbps),
    ):
        folder = clip_folder(scratch, kind)
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in size.split("x"))
        report["kinds"][kind] = {"distinct": count, "size": size, "seconds": seconds, "name": KINDS[kind]}
        shape = (width, height, args.fps, args.preset, kbps)
        jobs += [(folder / f"{kind}{i:03d}.mp4", seconds, i, *shape) for i in range(count)]
    jobs.sort(key=lambda job: -job[3] * job[4] * job[1])  # the big ones first: the pool ends together
    if not made:
        with ProcessPoolExecutor(cores) as pool:
            list(pool.map(_make_clip, jobs))
        marker.write_text(json.dumps(wanted))
    report["clips_s"] = time.perf_counter() - start
    report["clips_reused"] = made
    for kind, figures in report["kinds"].items():
        files = sorted(clip_folder(scratch, kind).glob("*.mp4"))
        figures["file_kbit_per_s"] = sum(f.stat().st_size for f in files) * 8 / 1000 / len(files) / figures["seconds"]
    start = time.perf_counter()
    folder = whisper_folder(scratch)
    if not (folder / "model.safetensors").exists():
        make_whisper(folder, args.whisper_shape)
    config = load(args)
    from gais_pipe.extract.clip_model import random_checkpoint, register_bundled_architectures

    register_bundled_architectures()

    clip = config["features"]["clip"]
    if str(clip["pretrained"]) == "random":
        random_checkpoint(clip["model"], int(clip.get("seed", 0)), scratch / "models")
    report["models_s"] = time.perf_counter() - start
    report["whisper_shape"] = args.whisper_shape
    return report


# --- shared helpers -------------------------------------------------------------------------------
def load(args):
    from gais_pipe.config import load_config

    return load_config(args.config, args.overrides)


def seed_models(scratch: Path, workdir: Path) -> None:
    """A fresh workdir gets the random CLIP checkpoint made in `prepare` (same file, same sha256): a user with
    pretrained weights loads a file too, and never pays for a random initialisation."""
    target = workdir / "models"
    target.mkdir(parents=True, exist_ok=True)
    for file in (scratch / "models").glob("*.safetensors"):
        if not (target / file.name).exists():
            os.link(file, target / file.name)


def linked_clips(scratch: Path, kind: str, count: int) -> Path:
    """A folder of `count` names for the kind's distinct clips, hard-linked round robin."""
    sources = sorted(clip_folder(scratch, kind).glob("*.mp4"))
    folder = scratch / f"videos-{kind}-{count}"
    if not folder.exists():
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for i in range(count):
            os.link(sources[i % len(sources)], staging / f"v{i:05d}.mp4")
        staging.rename(folder)
    return folder


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loop(step, device, seconds: float, least: int = 2) -> tuple[int, float]:
    """(calls, seconds) of `step` repeated for about `seconds`, at least `least` times, synchronised on CUDA
    before the clock starts and before it stops (callers warm up first)."""
    synchronize(device)
    start, calls = time.perf_counter(), 0
    while calls < least or time.perf_counter() - start < seconds:
        step()
        calls += 1
    synchronize(device)
    return calls, time.perf_counter() - start


# --- decoding alone -------------------------------------------------------------------------------
def pool_run(refs, spec, workers: int, queued: int, cap_s: float) -> dict:
    """One DecodePool over `refs`: time to its first item, and the steady rate after the first wave (one video
    per worker), stopped after `cap_s` seconds of decoding."""
    from gais_pipe.extract.decode_pool import DecodePool
    from gais_pipe.extract.reader import DecodedVideo

    start, started = time.perf_counter(), time.time()
    arrived, problems, steps = [], [], {}
    with DecodePool(list(refs), spec, workers, queued) as pool:
        for item in pool:
            arrived.append(time.perf_counter() - start)
            if isinstance(item, DecodedVideo):
                for step, seconds in item.seconds.items():
                    steps[step] = steps.get(step, 0.0) + seconds
            else:
                problems.append(f"{item.id}: {item.reason}")
            if arrived[-1] - arrived[0] > cap_s:
                break
        counts = pool.counts
    wave = min(max(workers, 1), len(arrived) - 1)
    span = arrived[-1] - arrived[wave] if len(arrived) > wave + 1 else 0.0
    return {
        "first_item_s": arrived[0] if arrived else None,
        "first_item_at": started + arrived[0] if arrived else None,
        "videos": len(arrived),
        "steady_videos_per_s": (len(arrived) - 1 - wave) / span if span > 0 else None,
        "core_s_per_video": {k: v / max(1, len(arrived) - len(problems)) for k, v in steps.items()},
        "wait_s": counts.wait_seconds,
        "transfer_s": counts.transfer_seconds,
        "problems": problems[:5],
    }


def hwaccel_probe(path: Path) -> dict:
    """PyAV's hardware decoders: what FFmpeg was built with, and whether NVDEC really decodes one 720p clip
    (frames/s against software decoding on one thread)."""
    import av

    found: dict = {"av": av.__version__}
    try:
        import av.codec.hwaccel as hwaccel

        found["hwdevices_available"] = list(hwaccel.hwdevices_available())
    except (ImportError, AttributeError) as error:
        found["hwdevices_available"] = f"unavailable: {error}"
        return found

    def frames_per_s(**options) -> float:
        start, count = time.perf_counter(), 0
        with av.open(str(path), **options) as container:
            stream = container.streams.video[0]
            if "hwaccel" not in options:
                stream.thread_count = 1
            for _ in container.decode(stream):
                count += 1
        return count / (time.perf_counter() - start)

    found["software_1_thread_fps"] = frames_per_s()
    if "cuda" in found["hwdevices_available"]:
        try:
            accel = hwaccel.HWAccel(device_type="cuda", allow_software_fallback=False)
            found["cuda_fps"] = frames_per_s(hwaccel=accel)
        except Exception as error:  # a report: say why NVDEC did not decode
            found["cuda_fps"] = f"failed: {error.__class__.__name__}: {str(error)[:200]}"
    return found


def decode(args) -> dict:
    """Time to the first item of a first (cold forkserver) and a second (warm) DecodePool, and decode-only
    videos/s of both kinds with `workers` workers."""
    from gais_pipe.extract.account import process_start_time
    from gais_pipe.extract.discover import discover
    from gais_pipe.extract_stage import decode_parallelism, decode_spec

    config = load(args)
    runtime = dict(config["runtime"], decode_workers=args.workers)
    workers, queued = decode_parallelism(runtime)
    start = time.perf_counter()
    spec = decode_spec(config, workers)
    report = {"workers": workers, "queued_per_worker": queued, "spec_s": time.perf_counter() - start}
    refs = {kind: discover(linked_clips(args.scratch, kind, args.count))[0] for kind in KINDS}
    report["first_pool"] = pool_run(refs["msrvtt"], spec, workers, queued, args.cap_s)
    origin, first = process_start_time(), report["first_pool"]["first_item_at"]
    if origin is not None and first is not None:  # imports and decode_spec included
        report["first_pool"]["process_start_to_first_item_s"] = first - origin
    report["second_pool"] = pool_run(refs["msrvtt"][: 2 * max(workers, 1)], spec, workers, queued, args.cap_s)
    report["hd"] = pool_run(refs["hd"], spec, workers, queued, args.cap_s)
    report["msrvtt_videos_per_s"] = report["first_pool"]["steady_videos_per_s"]
    report["hd_videos_per_s"] = report["hd"]["steady_videos_per_s"]
    report["hwaccel"] = hwaccel_probe(sorted(clip_folder(args.scratch, "hd").glob("*.mp4"))[0])
    return report


# --- encoding alone -------------------------------------------------------------------------------
def encode(args) -> dict:
    """The encoders alone on one batch of real decoded clips: the image tower (images/s) and the Whisper
    encoder (30 s windows/s), each through the mapper as extract calls it and bare on device-resident input."""
    import torch

    from gais_pipe.extract.decode_pool import DecodePool
    from gais_pipe.extract.discover import discover
    from gais_pipe.extract.reader import DecodedVideo
    from gais_pipe.extract.whisper_input import whisper_input
    from gais_pipe.extract_stage import decode_spec, feature_mapper, set_up_encoders
    from gais_pipe.workdir import Workdir

    config = load(args)
    runtime = config["runtime"]
    batch, frames = int(runtime["batch_videos"]), int(config["features"]["frames"])
    refs = discover(clip_folder(args.scratch, "msrvtt"))[0]
    spec = decode_spec(config, args.workers)
    with DecodePool(refs, spec, args.workers) as pool:
        decoded = [v for v in pool if isinstance(v, DecodedVideo)]
    videos = (decoded * math.ceil(batch / len(decoded)))[:batch]
    work = Workdir(args.scratch / "encode-work")
    work.create()
    seed_models(args.scratch, work.root)
    start = time.perf_counter()
    encoders = set_up_encoders(config, work, spec)
    mapper = feature_mapper(encoders, config)
    device, dtype = encoders.device, encoders.precision
    report = {
        "device": str(device),
        "precision": encoders.record["identity"]["precision"],
        "load_s": time.perf_counter() - start,
        "batch_videos": batch,
        "frames": frames,
    }
    pixels = [v.frames.pixels for v in videos]
    images = batch * frames

    def mapper_images():
        mapper.encode_images(pixels)

    with torch.inference_mode():
        on_device = torch.from_numpy(np.concatenate(pixels)).to(device).permute(0, 3, 1, 2)
        on_device = (on_device.float() / 255.0 - mapper.mean) / mapper.std

    def tower_images():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            encoders.clip.model.encode_image(on_device)

    heard = [v for v in videos if v.audio_input is not None]
    windows = sum(len(v.audio_input) for v in heard) if heard and hasattr(heard[0].audio_input, "valid") else 0

    def mapper_audio():
        mapper.encode_audio(heard, frames)

    for name, step, count in (("image_mapper", mapper_images, images), ("image_tower", tower_images, images)):
        for _ in range(args.warmup):
            step()
        calls, seconds = timed_loop(step, device, args.seconds)
        report[f"{name}_images_per_s"] = calls * count / seconds
    if heard:
        for _ in range(args.warmup):
            mapper_audio()
        calls, seconds = timed_loop(mapper_audio, device, args.seconds)
        report["audio_mapper_videos_per_s"] = calls * len(heard) / seconds
        if windows:
            report["audio_mapper_windows_per_s"] = calls * windows / seconds
            encoder = encoders.audio.encoder
            with torch.inference_mode():
                weights = next(encoder.parameters()).dtype
                prepared = [v.audio_input for v in heard]
                stacked = whisper_input(prepared, device, weights)
                stacked = stacked.repeat(math.ceil(encoders.audio.batch / len(stacked)), 1, 1)[: encoders.audio.batch]

            def bare_whisper():
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    encoder(stacked)

            for _ in range(args.warmup):
                bare_whisper()
            calls, seconds = timed_loop(bare_whisper, device, args.seconds)
            report["whisper_encoder_windows_per_s"] = calls * len(stacked) / seconds
            report["whisper_batch"] = len(stacked)
    report["windows_per_video"] = windows / max(1, len(heard))
    if device.type == "cuda":
        report["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return report


# --- extraction through the CLI -------------------------------------------------------------------
def expected_count(args, kind: str) -> tuple[int, str]:
    """How many clips fill about `target_s` of steady extraction, from the decode and encode steps' rates
    (the slowest part bounds the pipeline); a default when those steps did not run."""
    if args.count:
        return args.count, "given"
    rates = []
    try:
        decoded = json.loads((args.out / "decode.json").read_text())
        rates.append(decoded[f"{kind}_videos_per_s"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        encoded = json.loads((args.out / "encode.json").read_text())
        # images, then sound, one after the other in the main process (one 30 s window a clip either kind)
        per_video = encoded["frames"] / encoded["image_mapper_images_per_s"] + 1 / encoded["audio_mapper_videos_per_s"]
        rates.append(1 / per_video)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        pass
    rates = [r for r in rates if r]
    if not rates:
        return {"msrvtt": 300, "hd": 96}[kind], "default (no decode or encode figures)"
    count = int(min(rates) * args.target_s)
    return max(args.least, min(args.most, count)), f"{min(rates):.1f} videos/s x {args.target_s:g} s"


def read_samples(path: Path, launched: float, stopped: float) -> list[tuple[float, float, float]]:
    """(time.time(), busy %, memory MiB) per nvidia-smi line; times spread evenly when a stamp cannot be read."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = [p.strip() for p in line.split(",")]
        try:
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        except (ValueError, IndexError):
            stamp = None
        try:
            rows.append((stamp, float(parts[1]), float(parts[2])))
        except (ValueError, IndexError):
            continue
    if rows and any(r[0] is None for r in rows):
        step = (stopped - launched) / len(rows)
        rows = [(launched + (i + 0.5) * step, busy, memory) for i, (_, busy, memory) in enumerate(rows)]
    return rows


def gpu_busy(rows: list[tuple[float, float, float]], first: float, end: float, launched: float, ms: int) -> dict:
    """nvidia-smi's figures over the steady state (samples from the first encoded batch to the end) and over
    the whole command."""
    steady = [r for r in rows if first <= r[0] <= end]
    return {
        "sample_ms": ms,
        "samples": len(rows),
        "steady_samples": len(steady),
        "busy_pct_steady": statistics.fmean(r[1] for r in steady) if steady else None,
        "busy_pct_whole_command": statistics.fmean(r[1] for r in rows) if rows else None,
        "memory_mib_max": max((r[2] for r in rows), default=None),
        "steady_from_s": first - launched,
        "steady_to_s": end - launched,
    }


def extract(args) -> dict:
    """`python -m gais_pipe extract` on `count` clips of one kind, in a fresh workdir, with nvidia-smi sampling
    the GPU only while that command runs. GPU busy % is taken over the steady state: from the first
    encoded batch's stamp (the account's) to the end."""
    count, why = expected_count(args, args.kind)
    videos = linked_clips(args.scratch, args.kind, count)
    work = args.scratch / f"work-{args.kind}"
    shutil.rmtree(work, ignore_errors=True)
    seed_models(args.scratch, work)
    command = [sys.executable, "-m", "gais_pipe", "extract", str(videos), "--workdir", str(work)]
    command += ["--config", args.config, *(a for o in args.overrides for a in ("--set", o)), "--quiet", "--json"]
    limit = float(os.environ.get("STEP_LIMIT", 0)) or args.limit
    report = {"kind": KINDS[args.kind], "clips": count, "count_from": why, "target_videos_per_s": TARGETS[args.kind]}
    samples_file = args.out / f"extract-{args.kind}-gpu.csv"
    sampler = None
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=timestamp,utilization.gpu,memory.used"
        with open(samples_file, "w") as handle:
            sampler = subprocess.Popen(
                ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", str(args.sample_ms)], stdout=handle
            )
    launched = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(5.0, limit - 8))
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout, stderr, code = "", (expired.stderr or b"").decode(errors="replace"), "timed out"
    stopped = time.time()
    if sampler is not None:
        sampler.terminate()
        sampler.wait()
    (args.out / f"extract-{args.kind}.stderr").write_text(stderr)
    report["command"] = " ".join(command)
    report["exit"] = code
    report["wall_s"] = stopped - launched
    summary = json.loads(stdout.strip().splitlines()[-1]) if code == 0 and stdout.strip() else None
    if summary is None:
        report["error"] = stderr[-2000:]
        return report
    account = summary["account"]
    batches = account.get("batches") or []
    report.update(
        {
            "videos_per_s": account.get("steady_videos_per_s"),
            "videos_per_s_is": "steady state: videos after the first encoded batch / seconds after it",
            "overall_videos_per_s": summary["videos_per_s"],
            "startup_s": account.get("startup_s"),
            "extracted": summary["extracted"],
            "failed": summary["failed"],
            "account": account,
            "where_the_time_went": stderr[stderr.rfind("where the time went") :][:3000] if stderr else "",
        }
    )
    report["meets_target"] = bool(report["videos_per_s"] and report["videos_per_s"] >= TARGETS[args.kind])
    if sampler is None:
        report["gpu"] = "no nvidia-smi here: not sampled"
    else:  # the account's clock starts at the run's start, `before_run` after the process's (~ launched)
        first = launched + account["startup_parts_s"]["before_run"] + (batches[0][0] if batches else 0.0)
        rows = read_samples(samples_file, launched, stopped)
        report["gpu"] = gpu_busy(rows, first, launched + account["wall_s"], launched, args.sample_ms)
    sampled = report.get("gpu")
    report["gpu_busy_pct_steady"] = sampled.get("busy_pct_steady") if isinstance(sampled, dict) else None
    return report


# --- exact search with torch ------------------------------------------------------------------------
class GeneratedStore:
    """Stands in for a RerankStore: `ExactIndex` reads only len() and iter_embeddings() blocks. Unit vectors
    around a few thousand centres, generated with torch (on the GPU when there is one) in float16 blocks."""

    def __init__(self, rows: int, dim: int, device, block: int = 65536):
        import torch

        self.rows, self.dim, self.device, self.block = rows, dim, device, block
        generator = torch.Generator(device=device).manual_seed(0)
        self.centres = torch.randn(max(10, min(10000, rows // 100)), dim, device=device, generator=generator)
        self.generator = generator
        self.first_block = None

    def __len__(self) -> int:
        return self.rows

    def iter_embeddings(self):
        import torch

        for start in range(0, self.rows, self.block):
            n = min(self.rows, start + self.block) - start
            pick = torch.randint(0, len(self.centres), (n,), device=self.device, generator=self.generator)
            noise = torch.randn(n, self.dim, device=self.device, generator=self.generator)
            vectors = torch.nn.functional.normalize(self.centres[pick] + 0.7 * noise, dim=1)
            block = vectors.half().cpu().numpy()
            if self.first_block is None:
                self.first_block = block.astype(np.float32)
            yield start, block


def text_like(base: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Queries as CLIP text is to video: a shared offset dominates, a weak pull towards one base vector."""
    rng = np.random.default_rng(seed)
    targets = base[rng.choice(len(base), count, replace=False)]
    noise = rng.standard_normal(targets.shape).astype(np.float32)
    gap = np.random.default_rng(12345).standard_normal(base.shape[1]).astype(np.float32)
    queries = gap / np.linalg.norm(gap) + 0.6 * targets + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def search(args) -> dict:
    """The exact search `build-index` serves without faiss (index/searchable.py ExactIndex: fp16 matmul and
    top-k on the GPU): load time, p50 / p99 of a batch of text-like queries and of one query, and recall@k of
    its fp16 scores against fp32."""
    import torch

    from gais_pipe.index.searchable import ExactIndex

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    store = GeneratedStore(args.rows, args.dim, device)
    start = time.perf_counter()
    index = ExactIndex(store, device)
    synchronize(device)
    report = {"device": str(device), "rows": args.rows, "dim": args.dim, "dtype": str(index.dtype), "k": args.k}
    report["build_s"] = time.perf_counter() - start  # generating the vectors included
    queries = text_like(store.first_block, args.batch)
    for name, batch in (("batch", queries), ("one", queries[:1])):
        for _ in range(3):
            index.search(batch, args.k)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            index.search(batch, args.k)
            times.append(time.perf_counter() - start)
        times.sort()
        report[f"{name}_queries"] = len(batch)
        report[f"{name}_p50_ms"] = 1000 * times[len(times) // 2]
        report[f"{name}_p99_ms"] = 1000 * times[min(len(times) - 1, int(0.99 * len(times)))]
    report["batch_queries_per_s"] = args.batch / (report["batch_p50_ms"] / 1000)
    _, found = index.search(queries, args.k)
    with torch.no_grad():
        exact = torch.from_numpy(queries).to(device) @ index.vectors.float().T
        truth = exact.topk(args.k, dim=1).indices.cpu().numpy()
    report[f"recall@{args.k}_vs_fp32_exact"] = float(
        np.mean([len(set(f) & set(t)) / args.k for f, t in zip(found.tolist(), truth.tolist())])
    )
    return report


# --- the report -------------------------------------------------------------------------------------
STEPS = (
    "prepare",
    "decode",
    "encode",
    "extract-msrvtt",
    "extract-720p",
    "search",
    "pipeline",
    "precision",
    "train",
    "eval",
    "index",
)


def step_result(out: Path, name: str) -> dict:
    status, result = out / f"{name}.status", out / f"{name}.json"
    found = {"status": status.read_text().strip() if status.exists() else "not run", "figures": None}
    try:
        found["figures"] = json.loads(result.read_text()) if result.exists() else None
    except ValueError as error:  # cut short by the step's limit while writing
        found["error"] = f"{result.name} unreadable: {error}"
    return found


def headline(steps: dict) -> dict:
    """What a reader wants first: videos/s against the targets, steady GPU busy %, start-up, the per-stage
    account; then the decode-only and encode-only figures that explain them."""
    top = {}
    for kind, name in (("msrvtt", "extract-msrvtt"), ("hd", "extract-720p")):
        figures = steps[name]["figures"] or {}
        account = figures.get("account") or {}
        top[name] = {
            "status": steps[name]["status"],
            "videos_per_s": figures.get("videos_per_s"),
            "target_videos_per_s": TARGETS[kind],
            "meets_target": figures.get("meets_target"),
            "overall_videos_per_s": figures.get("overall_videos_per_s"),
            "gpu_busy_pct_steady": figures.get("gpu_busy_pct_steady"),
            "startup_s": figures.get("startup_s"),
            "clips": figures.get("clips"),
            "gpu": figures.get("gpu"),
            "encoded_batches": len(account.get("batches") or []),
            "per_stage": {
                k: account.get(k)
                for k in (
                    "startup_parts_s",
                    "decode_s",
                    "decode_workers",
                    "transfer_s",
                    "wait_for_decoders_s",
                    "encode_s",
                    "write_s",
                    "steady_videos",
                    "steady_s",
                    "redecoded_alone",
                )
            },
        }
    decoded, encoded = steps["decode"]["figures"] or {}, steps["encode"]["figures"] or {}
    top["decode_only"] = {
        "workers": decoded.get("workers"),
        "msrvtt_videos_per_s": decoded.get("msrvtt_videos_per_s"),
        "hd_videos_per_s": decoded.get("hd_videos_per_s"),
        "first_pool_first_item_s": (decoded.get("first_pool") or {}).get("first_item_s"),
        "second_pool_first_item_s": (decoded.get("second_pool") or {}).get("first_item_s"),
    }
    top["encode_only"] = {
        k: encoded.get(k)
        for k in (
            "precision",
            "image_tower_images_per_s",
            "image_mapper_images_per_s",
            "whisper_encoder_windows_per_s",
            "audio_mapper_windows_per_s",
        )
    }
    return top


def module_version(name: str) -> str:
    try:
        module = __import__(name)
    except Exception as error:  # a report: a missing wheel shows here
        return f"missing ({error.__class__.__name__})"
    return str(getattr(module, "__version__", "present"))


def report(out: Path, small: bool) -> dict:
    import platform

    steps = {name: step_result(out, name) for name in STEPS}
    result = {"extraction": headline(steps), "small": small, "python": platform.python_version()}
    try:
        import torch

        result["torch"], result["cuda"] = torch.__version__, torch.version.cuda
        result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as error:  # a report, not a check: say what was missing
        result["torch"] = f"unavailable: {error}"
    try:
        from gais_pipe.index.gpu import gpu_status

        result["faiss"] = gpu_status().note
    except Exception as error:
        result["faiss"] = f"unavailable: {error}"
    result["hwaccel"] = (steps["decode"]["figures"] or {}).get("hwaccel")
    result["modules"] = {name: module_version(name) for name in ("av", "decord", "open_clip", "pebble", "faiss")}
    result.update(steps)
    return result


# --- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def configured(name: str):
        sub = commands.add_parser(name)
        sub.add_argument("--scratch", type=Path, required=True)
        sub.add_argument("--config", default="paper")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        sub.add_argument("--json", type=Path, required=True)
        sub.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 3) - 2))
        return sub

    sub = configured("prepare")
    sub.add_argument("--msrvtt-distinct", type=int, default=32)
    sub.add_argument("--msrvtt-size", default="320x240")
    sub.add_argument("--msrvtt-seconds", type=float, default=15.0)
    sub.add_argument("--hd-distinct", type=int, default=16)
    sub.add_argument("--hd-size", default="1280x720")
    sub.add_argument("--hd-seconds", type=float, default=10.0)
    sub.add_argument("--msrvtt-kbps", type=int, default=400, help="H.264 bit rate (MSR-VTT's clips: a few hundred)")
    sub.add_argument("--hd-kbps", type=int, default=2500)
    sub.add_argument("--fps", type=int, default=30)
    sub.add_argument("--preset", default="veryfast", help="x264 preset of the generated clips")
    sub.add_argument("--whisper-shape", choices=["base", "tiny-test"], default="base")
    sub = configured("decode")
    sub.add_argument("--count", type=int, default=400, help="names per kind the pools decode (at most)")
    sub.add_argument("--cap-s", type=float, default=8.0, help="stop a pool after this long from its first item")
    sub = configured("encode")
    sub.add_argument("--seconds", type=float, default=3.0, help="length of each timed loop")
    sub.add_argument("--warmup", type=int, default=3)
    sub = configured("extract")
    sub.add_argument("--kind", choices=sorted(KINDS), required=True)
    sub.add_argument("--out", type=Path, required=True, help="where decode.json / encode.json lie")
    sub.add_argument("--count", type=int, default=0, help="clips; 0: enough for --target-s of steady state")
    sub.add_argument("--target-s", type=float, default=20.0)
    sub.add_argument("--least", type=int, default=64)
    sub.add_argument("--most", type=int, default=1200)
    sub.add_argument("--limit", type=float, default=55.0, help="seconds (STEP_LIMIT from gpu_check.sh wins)")
    sub.add_argument("--sample-ms", type=int, default=200)
    sub = commands.add_parser("search")
    sub.add_argument("--rows", type=int, default=1_000_000)
    sub.add_argument("--dim", type=int, default=512)
    sub.add_argument("--batch", type=int, default=64, help="text-like queries searched together")
    sub.add_argument("--k", type=int, default=10)
    sub.add_argument("--repeats", type=int, default=50)
    sub.add_argument("--device", default="auto")
    sub.add_argument("--json", type=Path, required=True)
    sub = commands.add_parser("report")
    sub.add_argument("out", type=Path)
    sub.add_argument("small", choices=["0", "1"])
    args = parser.parse_args(argv)

    if args.command == "report":
        path = args.out / "gpu_check.json"
        path.write_text(json.dumps(report(args.out, args.small == "1"), indent=2))
        print(path)
        return 0
    run = {"prepare": prepare, "decode": decode, "encode": encode, "extract": extract, "search": search}
    result = run[args.command](args)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2)[-1500:])
    return 0 if args.command != "extract" or result.get("exit") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

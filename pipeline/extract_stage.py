"""The extract stage: find videos, skip those already done, decode in the background, encode in
batches, write shards. Reader, mapper and writer are in gais_pipe.extract; this module only wires
them together, counts, and shows progress. `run_extract` is three steps: plan (this worker's share of
the videos, the device, the encoders, the feature identity, what is left to do), the decode-encode-write
loop, and the summary.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gais_pipe.config import Config, copy_config, short_hash
from gais_pipe.distributed import (
    autocast_dtype,
    cores_per_process,
    effective_precision,
    owner,
    resolve_device,
    use_tensor_cores,
    worker_slot,
)
from gais_pipe.extract.audio_encoders import make_audio_encoder
from gais_pipe.extract.clip_model import LoadedClip, image_tower_in, load_clip
from gais_pipe.extract.discover import Problem, VideoRef, discover
from gais_pipe.extract.guard import GuardedMapper
from gais_pipe.extract.mapper import FeatureMapper
from gais_pipe.extract.reader import DecodedVideo, DecodeSpec, decoded_stream
from gais_pipe.extract.shards import BackgroundWriter, ShardWriter
from gais_pipe.workdir import RowRef, Workdir


@dataclass
class ExtractSummary:
    found: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    warned: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def videos_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0


def feature_record(config: Config, clip, audio_encoder, precision: str = "fp32") -> dict:
    """What the features mean, and a hash of it. Paths are left out: moving a checkpoint changes nothing.
    `precision` is what the encoders computed in (`distributed.effective_precision`): fp16 and fp32 rows
    differ, so one workdir never mixes them."""
    features = copy_config(config["features"])
    features["clip"].pop("pretrained", None)
    features["audio"].pop("model", None)
    identity = {
        "features": features,
        "clip_sha256": clip.identity["sha256"],
        "audio_sha256": audio_encoder.identity["sha256"],
        "embed_dim": clip.embed_dim,
        "audio_dim": audio_encoder.dim,
        "image_size": clip.image_size,
        "precision": precision,
    }
    return {
        "feature_hash": short_hash(identity),
        "identity": identity,
        "config_name": config.get("name"),
        "config": config,
        "clip": clip.identity,
        "audio": audio_encoder.identity,
    }


def available_cores(env: dict | None = None) -> int:
    """This process's share of the cores it may run on: under torchrun or srun the ranks of a node share them."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores_per_process(os.environ if env is None else env, affinity)


def decode_parallelism(runtime: dict) -> tuple[int, int]:
    """(workers, videos queued per worker): by default enough queued to decode the next whole batch
    while the current one is being encoded, so that decoding and encoding overlap."""
    workers = min(int(runtime["decode_workers"]), available_cores())
    prefetch = int(runtime["prefetch"]) or math.ceil(int(runtime["batch_videos"]) / max(workers, 1)) + 1
    return workers, prefetch


def decoder_threads(workers: int) -> int:
    """PyAV threads per decoder: this process's cores shared among its decoders. FFmpeg's own default, a
    thread per core of the machine in every decoder of every rank, oversubscribes a node many times over."""
    return max(1, available_cores() // max(1, workers))


def _unchanged(done: RowRef | None, ref: VideoRef) -> bool:
    return done is not None and done.size == ref.size and abs(done.mtime - ref.mtime) < 1e-6


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.2f} videos/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


class Report:
    """Counts into the summary and says each failure and warning in one line; failures go to failures.jsonl."""

    def __init__(self, summary: ExtractSummary, work: Workdir, console: Console):
        self.summary, self.work, self.console = summary, work, console

    def fail(self, problem: Problem, ref: VideoRef | None = None) -> None:
        self.summary.failed += 1
        self.summary.problems.append(problem)
        self.work.log_failure(
            problem.id, problem.stage, problem.reason, ref.size if ref else None, ref.mtime if ref else None
        )
        self.say(f"[red]failed[/red] {problem.id}: {problem.stage}: {problem.reason}")

    def encode_failed(self, video: DecodedVideo, error: BaseException) -> None:
        self.fail(Problem(video.ref.id, "encode", f"{error.__class__.__name__}: {error}"), video.ref)

    def warn(self, video: DecodedVideo) -> None:
        for warning in video.warnings:
            self.summary.warned += 1
            self.say(f"[yellow]warning[/yellow] {video.ref.id}: {warning}")

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)


@dataclass
class Plan:
    """What set-up decided: the videos left to do, the device and encoders, how decoding runs."""

    todo: list[VideoRef]
    device: torch.device
    precision: torch.dtype | None  # the autocast dtype; None: fp32
    clip: LoadedClip
    audio: Any
    record: dict
    workers: int
    prefetch: int
    spec: DecodeSpec


def _set_up_encoders(config: Config, work: Workdir, workers: int) -> tuple:
    """(device, autocast dtype, clip, audio encoder); their feature record is claimed in the workdir."""
    runtime = config["runtime"]
    device = resolve_device(runtime["device"])
    use_tensor_cores(device)
    if device.type == "cpu":  # decoders and encoders share the cores: do not oversubscribe them
        torch.set_num_threads(int(runtime.get("torch_threads") or max(1, available_cores() - workers)))
    precision = autocast_dtype(device, runtime["precision"])
    clip = load_clip(config["features"]["clip"], work.models_dir, device)
    image_tower_in(clip, precision)
    audio = make_audio_encoder(config["features"]["audio"], device, precision, int(runtime["audio_batch"]))
    record = feature_record(config, clip, audio, effective_precision(device, runtime["precision"]))
    work.claim_identity(record)
    return device, precision, clip, audio, record


def plan_extraction(work: Workdir, config: Config, refs: list[VideoRef]) -> Plan:
    """Set up the device and encoders, fix the workdir's feature identity, and list the videos left to do."""
    runtime = config["runtime"]
    workers, prefetch = decode_parallelism(runtime)
    device, precision, clip, audio, record = _set_up_encoders(config, work, workers)
    frames = int(config["features"]["frames"])
    spec = DecodeSpec(
        frames, clip.image_size, audio.sample_rate, runtime["decoder"], audio.frontend, decoder_threads(workers)
    )
    done = work.rows()
    todo = [r for r in refs if not _unchanged(done.get(r.id), r)]
    return Plan(todo, device, precision, clip, audio, record, workers, prefetch, spec)


def _shard_writer(work: Workdir, plan: Plan, config: Config, videos: Path, slot: tuple[int, int]) -> BackgroundWriter:
    """Shards of this worker slot, written by a thread of their own (BackgroundWriter) so that HDF5 and
    fsync overlap the encoding of the next batch."""
    record, (index, count), runtime = plan.record, slot, config["runtime"]
    attrs = {
        "feature_hash": record["feature_hash"],
        "identity": record["identity"],
        "clip": record["clip"],
        "audio": record["audio"],
        "config_name": str(config.get("name")),
        "num_shards": count,
        # where relative video ids point: the VIDEOS folder, or the list file's folder
        "source_root": str((videos if videos.is_dir() else videos.parent).resolve()),
    }
    shards = ShardWriter(
        work.features_dir, attrs, index, int(runtime["shard_videos"]), float(runtime["shard_seconds"]), work.add_shard
    )
    return BackgroundWriter(shards)


def _mapper(plan: Plan, config: Config, report: Report) -> GuardedMapper:
    """The feature mapper, guarded: a failing video costs only itself, out of memory halves the batch, and
    any other CUDA error stops the run (extract.guard)."""
    coverage = float(config["features"]["audio"].get("min_coverage", 0.5))
    mapper = FeatureMapper(plan.clip, plan.audio, plan.device, plan.precision, coverage)
    return GuardedMapper(mapper, report.encode_failed, lambda note: report.say(f"[yellow]{note}"))


def decode_encode_write(
    plan: Plan, mapper: GuardedMapper, writer: BackgroundWriter, report: Report, batch_videos: int, progress: bool
) -> None:
    """Decode in the background, encode whole batches, hand the rows to the writer thread. Rows already
    encoded are written even when the loop stops (Ctrl-C, a DeviceFailure).

    On a GPU the decoders start from a forkserver: forking a process that holds a CUDA context is unsafe.
    The CPU keeps fork, measurably faster here (2 cores): a one-video loader starts in 0.2 s against 4 s
    for the first forkserver (0.4 s after), and a crashed decoder is noticed at once (SIGCHLD) instead of
    after DataLoader's 5 s status poll, since forkserver workers are not this process's children."""
    by_id = {r.id: r for r in plan.todo}
    start_method = "forkserver" if plan.device.type == "cuda" else None
    stream = decoded_stream(plan.todo, plan.spec, plan.workers, plan.prefetch, start_method)
    start, batch = time.perf_counter(), []

    def encode() -> None:
        rows = mapper(batch)
        writer.add(rows)
        report.summary.extracted += len(rows)
        batch.clear()

    with _progress(report.console, progress) as bar:
        task = bar.add_task("extract", total=len(plan.todo), rate=0.0)
        try:
            for processed, item in enumerate(stream, 1):
                if isinstance(item, Problem):
                    report.fail(item, by_id.get(item.id))
                else:
                    report.warn(item)
                    batch.append(item)
                    if len(batch) >= batch_videos:
                        encode()
                elapsed = time.perf_counter() - start
                bar.update(task, completed=processed, rate=processed / elapsed if elapsed else 0.0)
            if batch:
                encode()
        finally:
            writer.close()  # rows already encoded are complete: keep them even when interrupted


def _my_share(videos: Path, index: int, count: int) -> tuple[list[VideoRef], list[Problem]]:
    """The videos (and the unusable files) of this worker's slot."""
    refs, problems = discover(videos)
    return [r for r in refs if owner(r.id, count) == index], [p for p in problems if owner(p.id, count) == index]


def run_extract(
    videos: Path,
    workdir: Path,
    config: Config,
    num_shards: int | None = None,
    shard_index: int | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> ExtractSummary:
    console = console or Console(stderr=True)
    index, count = worker_slot(num_shards, shard_index)
    refs, problems = _my_share(videos, index, count)
    summary = ExtractSummary(found=len(refs) + len(problems))
    work = Workdir(workdir)
    work.create()
    with work.worker_lock(index, count):
        work.remove_stale_temporaries(index)
        for note in work.reconcile():
            console.print(f"[yellow]{work.root}: {note}")
        plan = plan_extraction(work, config, refs)
        summary.skipped = len(refs) - len(plan.todo)
        report = Report(summary, work, console)
        for problem in problems:
            report.fail(problem)
        mapper, writer = _mapper(plan, config, report), _shard_writer(work, plan, config, videos, (index, count))
        start = time.perf_counter()
        decode_encode_write(plan, mapper, writer, report, int(config["runtime"]["batch_videos"]), show_progress)
        summary.seconds = time.perf_counter() - start
    return summary

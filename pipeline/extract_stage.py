"""The extract stage: find videos, skip those already done, decode in the background, encode in
batches, write shards. Reader, distributor (decode pool), mapper and writer are in gais_pipe.extract;
this module only wires them together, counts, and shows progress. `run_extract`: this worker's share of
the videos and what is left to do; decoding starts; the encoders load meanwhile and claim the workdir's
feature identity; the decode-encode-write loop; the summary with its account of where the time went.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
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
    pick_device,
    resolve_device,
    use_tensor_cores,
    visible_gpus,
    worker_slot,
)
from gais_pipe.extract.account import StageAccount
from gais_pipe.extract.audio_encoders import make_audio_encoder, make_audio_frontend
from gais_pipe.extract.clip_model import LoadedClip, configured_image_size, image_tower_in, load_clip
from gais_pipe.extract.decode_pool import DecodePool
from gais_pipe.extract.discover import Problem, VideoRef, discover
from gais_pipe.extract.guard import GuardedMapper
from gais_pipe.extract.mapper import FeatureMapper
from gais_pipe.extract.reader import DecodedVideo, DecodeSpec
from gais_pipe.extract.shards import BackgroundWriter, ShardWriter
from gais_pipe.workdir import RowRef, Workdir


@dataclass
class ExtractSummary:
    found: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    warned: int = 0
    seconds: float = 0.0  # from the start of decoding (which overlaps loading the encoders) to the last row written
    problems: list[Problem] = field(default_factory=list)
    account: StageAccount | None = None  # where the time went

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


def decode_workers(runtime: dict, on_gpu: bool | None = None) -> int:
    """`runtime.decode_workers`, at most this process's cores. "auto": with a GPU, all of them but two (the
    encoders only feed the GPU: batching, copies, the shard writer), since extraction there is decode-bound;
    on the CPU, half (the encoders compute on the rest). 0: decode in this process."""
    cores, asked = available_cores(), runtime["decode_workers"]
    if asked != "auto":
        return min(int(asked), cores)
    if on_gpu is None:
        on_gpu = pick_device(str(runtime["device"]), os.environ, visible_gpus()).type == "cuda"
    return max(1, cores - 2) if on_gpu else max(1, cores // 2)


def decode_parallelism(runtime: dict, on_gpu: bool | None = None) -> tuple[int, int]:
    """(workers, videos queued per worker): by default enough queued to decode the next whole batch
    while the current one is being encoded, so that decoding and encoding overlap."""
    workers = decode_workers(runtime, on_gpu)
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
        self.failed_before = 0  # failures found before decoding (unusable files): not in the progress bar

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
class Encoders:
    """What loading the models decided: the device, the autocast dtype, the encoders and the feature record."""

    device: torch.device
    precision: torch.dtype | None  # the autocast dtype; None: fp32
    clip: LoadedClip
    audio: Any
    record: dict


def decode_spec(config: Config, workers: int) -> DecodeSpec:
    """What the decoders need, read from the config without loading a model, so decoding starts first."""
    features, runtime = config["features"], config["runtime"]
    frontend, sample_rate = make_audio_frontend(features["audio"])
    size = configured_image_size(features["clip"]["model"])
    return DecodeSpec(
        int(features["frames"]), size, sample_rate, runtime["decoder"], frontend, decoder_threads(workers)
    )


def set_up_encoders(config: Config, work: Workdir, spec: DecodeSpec) -> Encoders:
    """The device and encoders; their feature record is claimed in the workdir. Weight files are hashed once
    per workdir (hashes.json), not on every run."""
    runtime = config["runtime"]
    device = resolve_device(runtime["device"])
    use_tensor_cores(device)
    precision = autocast_dtype(device, runtime["precision"])
    clip = load_clip(config["features"]["clip"], work.models_dir, device, hash_file=work.sha256)
    if clip.image_size != spec.image_size:
        raise RuntimeError(
            f"{clip.identity['model']}: built at {clip.image_size} px, its config says {spec.image_size}"
        )
    image_tower_in(clip, precision)
    audio = make_audio_encoder(
        config["features"]["audio"], device, precision, int(runtime["audio_batch"]), hash_file=work.sha256
    )
    record = feature_record(config, clip, audio, effective_precision(device, runtime["precision"]))
    work.claim_identity(record)
    return Encoders(device, precision, clip, audio, record)


def encoder_threads(runtime: dict, workers: int) -> int:
    """CPU threads of this process's encoders: the cores the decode workers leave (on a GPU too, where
    torch's default of one per core would fight the decoders over the cores for nothing)."""
    return int(runtime.get("torch_threads") or max(1, available_cores() - workers))


def _shard_writer(
    work: Workdir, record: dict, config: Config, videos: Path, slot: tuple[int, int]
) -> tuple[BackgroundWriter, ShardWriter]:
    """Shards of this worker slot, written by a thread of their own (BackgroundWriter) so that HDF5 and
    fsync overlap the encoding of the next batch."""
    (index, count), runtime = slot, config["runtime"]
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
    return BackgroundWriter(shards), shards


def feature_mapper(encoders: Encoders, config: Config) -> FeatureMapper:
    coverage = float(config["features"]["audio"].get("min_coverage", 0.5))
    return FeatureMapper(encoders.clip, encoders.audio, encoders.device, encoders.precision, coverage)


def decode_encode_write(
    pool: DecodePool,
    mapper: Callable[[list[DecodedVideo]], list],
    writer: BackgroundWriter,
    report: Report,
    batch_videos: int,
    progress: bool,
    account: StageAccount,
    total: int,
) -> None:
    """Encode decoded videos in batches and hand the rows to the writer thread. Rows already encoded are
    written even when the loop stops (Ctrl-C, a DeviceFailure).

    A batch is encoded once it is full or when no decoded video is waiting: the encoders never sit idle
    while videos are ready, and batches grow by themselves when decoding runs ahead. The first batches are
    1, 2, 4, ... videos, so the first video is encoded seconds after start-up, whatever `batch_videos`."""
    summary, limit = report.summary, 1
    batch: list[DecodedVideo] = []
    with _progress(report.console, progress) as bar:
        task = bar.add_task("extract", total=total, rate=0.0)
        start = time.perf_counter()

        def encode() -> None:
            nonlocal limit
            rows = mapper(batch)
            writer.add(rows)
            summary.extracted += len(rows)
            account.add_batch(len(batch))
            batch.clear()
            limit = min(batch_videos, 2 * limit)

        def show() -> None:
            done = summary.extracted + summary.failed - report.failed_before
            elapsed = time.perf_counter() - start
            bar.update(task, completed=done, rate=done / elapsed if elapsed else 0.0)

        try:
            while True:
                item = pool.take(wait=not batch)
                if item is None:
                    if not batch:
                        break
                    encode()
                elif isinstance(item, Problem):
                    report.fail(item, pool.by_id.get(item.id))
                else:
                    account.add_decoded(item)
                    report.warn(item)
                    batch.append(item)
                    if len(batch) >= limit:
                        encode()
                show()
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
    make_mapper: Callable[[Encoders, Config], Callable] = feature_mapper,
) -> ExtractSummary:
    """Extract this worker's share of `videos` into `workdir`. Decoding starts first, in background
    processes, and runs while the encoders load. `make_mapper` builds what turns decoded videos into rows
    (benchmarks swap in encoders that do no work, to find the pipeline's ceiling)."""
    console = console or Console(stderr=True)
    account = StageAccount()
    index, count = worker_slot(num_shards, shard_index)
    refs, problems = _my_share(videos, index, count)
    summary = ExtractSummary(found=len(refs) + len(problems), account=account)
    work = Workdir(workdir)
    work.create()
    runtime = config["runtime"]
    with work.worker_lock(index, count):
        work.remove_stale_temporaries(index)
        for note in work.reconcile():
            console.print(f"[yellow]{work.root}: {note}")
        done = work.rows()
        todo = [r for r in refs if not _unchanged(done.get(r.id), r)]
        summary.skipped = len(refs) - len(todo)
        report = Report(summary, work, console)
        for problem in problems:
            report.fail(problem)
        report.failed_before = summary.failed
        workers, queued = decode_parallelism(runtime)
        account.workers = workers
        spec = decode_spec(config, workers)
        torch.set_num_threads(encoder_threads(runtime, workers))
        start = time.perf_counter()
        with DecodePool(todo, spec, workers, queued, float(runtime["decode_timeout"])) as pool:
            encoders = set_up_encoders(config, work, spec)
            account.encoders_ready = time.time()
            mapper = GuardedMapper(
                make_mapper(encoders, config), report.encode_failed, lambda note: report.say(f"[yellow]{note}")
            )
            writer, shards = _shard_writer(work, encoders.record, config, videos, (index, count))
            try:
                decode_encode_write(
                    pool, mapper, writer, report, int(runtime["batch_videos"]), show_progress, account, len(todo)
                )
            finally:
                account.decoding = pool.counts
                account.encode_seconds = dict(getattr(mapper.mapper, "seconds", {}))
                account.write_seconds = shards.seconds
                account.end = time.time()
        summary.seconds = time.perf_counter() - start
    return summary

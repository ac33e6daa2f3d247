"""The extract stage: find videos, skip those already done, decode in the background, encode in
batches, write shards. Reader, mapper and writer are in gais_pipe.extract; this module only wires
them together, counts, and shows progress.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from gais_pipe.distributed import autocast_dtype, owner, resolve_device, worker_slot
from gais_pipe.extract.audio_encoders import make_audio_encoder
from gais_pipe.extract.clip_model import load_clip
from gais_pipe.extract.discover import Problem, VideoRef, discover
from gais_pipe.extract.mapper import FeatureMapper
from gais_pipe.extract.reader import DecodedVideo, DecodeSpec, decoded_stream
from gais_pipe.extract.shards import ShardWriter
from gais_pipe.extract.workdir import RowRef, Workdir


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


# [features] keys added after workdirs existed: at these values they leave the hash alone, so that the
# workdirs, checkpoints and indexes made before the key existed keep their identity.
HASH_NEUTRAL = {("audio", "pool"): "mean"}


def feature_record(config: Config, clip, audio_encoder) -> dict:
    """What the features mean, and a hash of it. Paths are left out: moving a checkpoint changes nothing."""
    features = copy_config(config["features"])
    features["clip"].pop("pretrained", None)
    features["audio"].pop("model", None)
    for (section, key), neutral in HASH_NEUTRAL.items():
        if features.get(section, {}).get(key) == neutral:
            del features[section][key]
    identity = {
        "features": features,
        "clip_sha256": clip.identity["sha256"],
        "audio_sha256": audio_encoder.identity["sha256"],
        "embed_dim": clip.embed_dim,
        "audio_dim": audio_encoder.dim,
        "image_size": clip.image_size,
    }
    return {
        "feature_hash": short_hash(identity),
        "identity": identity,
        "config_name": config.get("name"),
        "config": config,
        "clip": clip.identity,
        "audio": audio_encoder.identity,
    }


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_parallelism(runtime: dict) -> tuple[int, int]:
    """(workers, videos queued per worker): by default enough queued to decode the next whole batch
    while the current one is being encoded, so that decoding and encoding overlap."""
    workers = min(int(runtime["decode_workers"]), available_cores())
    prefetch = int(runtime["prefetch"]) or math.ceil(int(runtime["batch_videos"]) / max(workers, 1)) + 1
    return workers, prefetch


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
    runtime = config["runtime"]
    index, count = worker_slot(num_shards, shard_index)
    refs, discovery_problems = discover(videos)
    refs = [r for r in refs if owner(r.id, count) == index]
    discovery_problems = [p for p in discovery_problems if owner(p.id, count) == index]
    summary = ExtractSummary(found=len(refs) + len(discovery_problems))

    work = Workdir(workdir)
    work.create()
    with work.worker_lock(index, count):
        work.remove_stale_temporaries(index)
        for note in work.reconcile():
            console.print(f"[yellow]{work.root}: {note}")
        device = resolve_device(runtime["device"])
        workers, prefetch = decode_parallelism(runtime)
        if device.type == "cpu":  # decoders and encoders share the cores: do not oversubscribe them
            torch.set_num_threads(int(runtime.get("torch_threads") or max(1, available_cores() - workers)))
        precision = autocast_dtype(device, runtime["precision"])
        clip = load_clip(config["features"]["clip"], work.models_dir, device)
        audio = make_audio_encoder(config["features"]["audio"], device, precision, int(runtime["audio_batch"]))
        record = feature_record(config, clip, audio)
        work.claim_identity(record)

        done = work.rows()
        todo = [r for r in refs if not _unchanged(done.get(r.id), r)]
        summary.skipped = len(refs) - len(todo)

        def fail(problem: Problem, ref: VideoRef | None = None) -> None:
            summary.failed += 1
            summary.problems.append(problem)
            work.log_failure(
                problem.id,
                problem.stage,
                problem.reason,
                ref.size if ref else None,
                ref.mtime if ref else None,
            )
            console.print(
                f"[red]failed[/red] {problem.id}: {problem.stage}: {problem.reason}",
                highlight=False,
                soft_wrap=True,
            )

        for problem in discovery_problems:
            fail(problem)

        frames = int(config["features"]["frames"])
        spec = DecodeSpec(frames, clip.image_size, audio.sample_rate, runtime["decoder"], audio.frontend)
        mapper = FeatureMapper(
            clip, audio, device, precision, float(config["features"]["audio"].get("min_coverage", 0.5))
        )
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
        writer = ShardWriter(
            work.features_dir,
            attrs,
            index,
            int(runtime["shard_videos"]),
            float(runtime["shard_seconds"]),
            work.add_shard,
        )
        by_id = {r.id: r for r in todo}
        start = time.perf_counter()

        def encode(batch: list[DecodedVideo]) -> None:
            try:
                rows = mapper(batch)
            except Exception:  # a batch that fails is retried video by video, so only the culprit is lost
                rows = []
                for video in batch:
                    try:
                        rows.extend(mapper([video]))
                    except Exception as error:
                        fail(Problem(video.ref.id, "encode", f"{error.__class__.__name__}: {error}"), video.ref)
            writer.add(rows)
            summary.extracted += len(rows)

        with _progress(console, show_progress) as progress:
            task = progress.add_task("extract", total=len(todo), rate=0.0)
            batch: list[DecodedVideo] = []
            processed = 0
            try:
                for item in decoded_stream(todo, spec, workers, prefetch):
                    if isinstance(item, Problem):
                        fail(item, by_id.get(item.id))
                    else:
                        for warning in item.warnings:
                            summary.warned += 1
                            console.print(
                                f"[yellow]warning[/yellow] {item.ref.id}: {warning}",
                                highlight=False,
                                soft_wrap=True,
                            )
                        batch.append(item)
                        if len(batch) >= int(runtime["batch_videos"]):
                            encode(batch)
                            batch = []
                    processed += 1
                    elapsed = time.perf_counter() - start
                    progress.update(task, completed=processed, rate=processed / elapsed if elapsed else 0.0)
                if batch:
                    encode(batch)
                    batch = []
            finally:
                writer.flush()  # rows already encoded are complete: keep them even when interrupted
        summary.seconds = time.perf_counter() - start
    return summary

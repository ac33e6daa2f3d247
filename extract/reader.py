"""The reader: one video in, its sampled frames, soundtrack and audio-encoder input out.

Runs inside DataLoader worker processes, so decoding overlaps with encoding in the main process.
It never raises: a video that cannot be used comes back as a `Problem`, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .discover import Problem, VideoRef
from .errors import VideoError
from .probe import probe
from .soundtrack import Soundtrack, decode_soundtrack
from .video_frames import SampledFrames, sample_frames


@dataclass
class DecodedVideo:
    ref: VideoRef
    frames: SampledFrames
    soundtrack: Soundtrack | None
    audio_input: Any  # the audio encoder frontend's output, or None without sound
    has_audio_stream: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DecodeSpec:
    frames: int
    image_size: int
    sample_rate: int
    decoder: str
    audio_frontend: Callable[[np.ndarray], Any]
    threads: int = 0  # PyAV's decoding threads per video (0: FFmpeg's choice, one per core)


def decode_video(ref: VideoRef, spec: DecodeSpec) -> DecodedVideo | Problem:
    try:
        info = probe(ref.path)
        frames = sample_frames(ref.path, info, spec.frames, spec.image_size, spec.decoder, spec.threads)
        warnings = []
        soundtrack, audio_problem = decode_soundtrack(ref.path, info, spec.sample_rate)
        if audio_problem:
            warnings.append(audio_problem)
        if soundtrack is not None and soundtrack.dropped_packets:
            warnings.append(f"{soundtrack.dropped_packets} bad audio packet(s) skipped")
        audio_input = spec.audio_frontend(soundtrack.samples) if soundtrack is not None else None
        return DecodedVideo(ref, frames, soundtrack, audio_input, info.has_audio, warnings)
    except VideoError as error:
        return Problem(ref.id, error.stage, error.reason)
    except Exception as error:  # one strange file must never stop the run
        return Problem(ref.id, "decode", f"unexpected {error.__class__.__name__}: {error}")


class VideoDataset(torch.utils.data.Dataset):
    def __init__(self, refs: list[VideoRef], spec: DecodeSpec):
        self.refs, self.spec = refs, spec

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> DecodedVideo | Problem:
        return decode_video(self.refs[index], self.spec)


def _as_is(item):
    return item


def worker_context(start_method: str | None, spec: DecodeSpec):
    """How decode workers start. None: the platform's default (fork on Linux: the fastest start, and the CPU
    path keeps it). "forkserver" once a GPU is in use: a forked CUDA process is unusable, and forking a process
    that holds a CUDA context, driver threads and pinned memory copies all of it for every worker. The server
    imports the decoder and the audio frontend's modules once, so its workers start about as fast as forks."""
    if start_method is None:
        return None
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        frontend = spec.audio_frontend
        modules = {__name__, type(frontend).__module__, *(type(v).__module__ for v in vars(frontend).values())}
        context.set_forkserver_preload(sorted(m for m in modules if m in sys.modules and m != "builtins"))
    return context


def decode_isolated(ref: VideoRef, spec: DecodeSpec, start_method: str | None = None) -> DecodedVideo | Problem:
    """Decode one video in a worker process of its own, so that a decoder crash costs only this video."""
    try:
        return next(iter(_loader([ref], spec, workers=1, prefetch=1, start_method=start_method)))
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        return Problem(ref.id, "decode", f"the decoder crashed ({str(error).splitlines()[0]})")


def _loader(refs: list[VideoRef], spec: DecodeSpec, workers: int, prefetch: int, start_method: str | None = None):
    return torch.utils.data.DataLoader(
        VideoDataset(refs, spec),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=max(1, prefetch),
        collate_fn=_as_is,
        multiprocessing_context=worker_context(start_method, spec),
    )


def decoded_stream(
    refs: list[VideoRef], spec: DecodeSpec, workers: int, prefetch: int, start_method: str | None = None
):
    """Decoded videos in input order, decoded `workers` at a time in background processes.

    A file that crashes the decoder (a segfault in FFmpeg, say) kills a DataLoader worker; then the
    videos that were in flight are decoded again one by one in processes of their own, so that only
    the culprit is lost, and the loader restarts after them. `start_method`: see `worker_context`.
    """
    if workers <= 0:
        yield from (decode_video(ref, spec) for ref in refs)
        return
    position = 0
    while position < len(refs):
        try:
            for item in _loader(refs[position:], spec, workers, prefetch, start_method):
                position += 1
                yield item
        except RuntimeError as error:
            if "DataLoader worker" not in str(error):
                raise
            in_flight = refs[position : position + workers * max(1, prefetch) + 1]
            for ref in in_flight:
                position += 1
                yield decode_isolated(ref, spec, start_method)

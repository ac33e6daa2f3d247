"""The reader: one video in, its sampled frames, soundtrack and audio-encoder input out.

Runs in the decode worker processes (`extract.decode_pool`), so decoding overlaps with encoding in the
main process. A file is opened once: one demuxing pass indexes the video packets and decodes the sound,
then the T frames are decoded (seeking where that saves work). It never raises: a video that cannot be
used comes back as a `Problem`, and the run goes on. Each result carries how long its steps took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .discover import Problem, VideoRef
from .errors import VideoError, describe_av_error
from .probe import audio_stream, check_not_empty, open_input, stream_info, unreadable
from .soundtrack import Soundtrack, SoundtrackDecoder
from .video_frames import (
    AV_ERRORS,
    PacketIndex,
    SampledFrames,
    check_decoder,
    decode_sampled_frames,
    sample_with_decord,
)

DECODE_STEPS = ("probe", "frames", "audio", "frontend")  # what `DecodedVideo.seconds` times, in this order


@dataclass
class DecodedVideo:
    ref: VideoRef
    frames: SampledFrames
    soundtrack: Soundtrack | None  # without its waveform: the frontend's output stands for it
    audio_input: Any  # the audio encoder frontend's output, or None without sound
    has_audio_stream: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each of DECODE_STEPS
    finished_at: float = 0.0  # time.time() when decoding ended: the main process measures the transfer from it

    def payload_bytes(self) -> int:
        """Bytes of arrays this result carries between processes."""
        arrays = [self.frames.pixels, *_arrays(self.audio_input)]
        return int(sum(a.nbytes for a in arrays))


def _arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for item in value for a in _arrays(item)]
    return [a for item in vars(value).values() for a in _arrays(item)] if hasattr(value, "__dict__") else []


@dataclass(frozen=True)
class DecodeSpec:
    frames: int
    image_size: int
    sample_rate: int
    decoder: str
    audio_frontend: Callable[[np.ndarray], Any]
    threads: int = 0  # PyAV's decoding threads per video (0: FFmpeg's choice, one per core)


class _Clock:
    """Wall time per step of one video."""

    def __init__(self):
        self.seconds = dict.fromkeys(DECODE_STEPS, 0.0)
        self.mark = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self.mark
        self.mark = now


def _read(ref: VideoRef, spec: DecodeSpec, clock: _Clock):
    """(info, frames, soundtrack decoder or None) from one open of the file."""
    check_not_empty(ref.path)
    try:
        container = open_input(ref.path)
    except AV_ERRORS as error:
        raise unreadable(error) from None
    with container:
        info = stream_info(container)
        video, audio = container.streams.video[0], audio_stream(container)
        clock.lap("probe")
        index = PacketIndex.of(video)
        pyav_error: VideoError | None = None
        sound = SoundtrackDecoder(audio, info, spec.sample_rate) if audio is not None else None
        try:  # one pass over the file: video packets indexed, sound decoded
            for packet in container.demux(*[s for s in (video, audio) if s is not None]):
                if packet.stream.type == "video":
                    index.add(packet)
                elif sound is not None:
                    sound.add(packet)
        except AV_ERRORS as error:  # a file cut short: keep what was read
            if sound is not None:
                sound.fail(error)
            if not index.pts:
                pyav_error = VideoError("decode", f"pyav: {describe_av_error(error)}")
        clock.lap("audio")
        frames = None
        if spec.decoder == "pyav" and pyav_error is not None:
            raise pyav_error
        if spec.decoder != "decord" and pyav_error is None:
            try:
                frames = decode_sampled_frames(container, index, spec.frames, spec.image_size, spec.threads)
            except VideoError as error:
                if spec.decoder == "pyav":
                    raise
                pyav_error = error
    if frames is None:  # decord: asked for, or the fallback when PyAV failed
        try:
            frames = sample_with_decord(ref.path, info, spec.frames, spec.image_size)
        except VideoError as decord_error:
            if pyav_error is None:
                raise
            raise VideoError("decode", f"{pyav_error.reason}; {decord_error.reason}") from None
    clock.lap("frames")
    return info, frames, sound


def decode_video(ref: VideoRef, spec: DecodeSpec) -> DecodedVideo | Problem:
    check_decoder(spec.decoder)
    try:
        clock = _Clock()
        info, frames, sound = _read(ref, spec, clock)
        warnings = []
        soundtrack, audio_problem = sound.result() if sound is not None else (None, None)
        clock.lap("audio")
        if audio_problem:
            warnings.append(audio_problem)
        if soundtrack is not None and soundtrack.dropped_packets:
            warnings.append(f"{soundtrack.dropped_packets} bad audio packet(s) skipped")
        audio_input = spec.audio_frontend(soundtrack.samples) if soundtrack is not None else None
        clock.lap("frontend")
        soundtrack = soundtrack.without_samples() if soundtrack is not None else None
        return DecodedVideo(
            ref, frames, soundtrack, audio_input, info.has_audio, warnings, clock.seconds, finished_at=time.time()
        )
    except VideoError as error:
        return Problem(ref.id, error.stage, error.reason)
    except Exception as error:  # one strange file must never stop the run
        return Problem(ref.id, "decode", f"unexpected {error.__class__.__name__}: {error}")

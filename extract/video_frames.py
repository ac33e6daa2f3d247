"""Decode the T sampled frames of a video, resized so the short side is the model's size, centre-cropped.

decord seeks straight to the frames it needs and is tried first; PyAV reads every packet in
order and so copes with files whose index decord cannot use. Resizing happens inside the decoder,
so a 4K video never exists in memory at full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .errors import VideoError, describe_av_error
from .probe import StreamInfo, open_input
from .sampling import centre_crop, frames_at, resize_shape, segment_centres

try:  # decord has wheels for x86_64 Linux only
    import decord
except ImportError:  # pragma: no cover - exercised on platforms without decord
    decord = None


@dataclass
class SampledFrames:
    pixels: np.ndarray  # [T, S, S, 3] uint8 RGB
    times: np.ndarray  # [T] seconds from the first frame: when each sampled frame is on screen
    duration: float  # seconds, from the first frame's start to the last frame's end
    fps: float
    decoder: str


def _pick(frame_starts: np.ndarray, duration: float, count: int) -> np.ndarray:
    if len(frame_starts) == 0 or duration <= 0:
        raise VideoError("decode", "no decodable video frames")
    return frames_at(segment_centres(duration, count), frame_starts)


def sample_with_decord(path: Path, info: StreamInfo, count: int, size: int) -> SampledFrames:
    if decord is None:
        raise VideoError("decode", "decord is not installed")
    width, height = resize_shape(info.width, info.height, size)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=1)
        total = len(reader)
        if total == 0:
            raise VideoError("decode", "no decodable video frames")
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(total)), dtype=np.float64)
        fps = float(reader.get_avg_fps())
        starts = stamps[:, 0] - stamps[0, 0]
        duration = float(stamps[-1, 1] - stamps[0, 0])
        if not np.all(np.isfinite(stamps)) or stamps[:, 0].min() < -10 or duration <= 0 or np.any(np.diff(starts) < 0):
            # No usable timestamps (AVI often has none: decord then reports garbage): constant frame rate.
            starts = np.arange(total) / fps
            duration = total / fps
        index = _pick(starts, duration, count)
        pixels = reader.get_batch(index.tolist()).asnumpy()
    except VideoError:
        raise
    except Exception as error:  # decord raises its own DECORDError and assorted RuntimeErrors
        raise VideoError(
            "decode", f"decord: {str(error).splitlines()[0] if str(error) else error.__class__.__name__}"
        ) from None
    return SampledFrames(centre_crop(pixels, size), starts[index].astype(np.float32), duration, fps, "decord")


def _packet_times(path: Path) -> tuple[np.ndarray, float, float]:
    """Presentation times of all video packets, without decoding: frame times and real duration."""
    starts, ends = [], []
    with open_input(path) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            starts.append(float(packet.pts * base))
            ends.append(float((packet.pts + (packet.duration or 0)) * base))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
    if not starts:
        raise VideoError("decode", "no video packets")
    order = np.sort(np.asarray(starts))
    origin = order[0]
    end = max(ends)
    if end <= order[-1]:  # packets without durations: one frame period past the last start
        end = order[-1] + (1.0 / rate if rate else 0.0)
    return order - origin, float(end - origin), rate


def sample_with_pyav(path: Path, info: StreamInfo, count: int, size: int, threads: int = 0) -> SampledFrames:
    """`threads`: FFmpeg's decoding threads (0: one per core of the machine, too many when several decoders
    of several processes share a node; the extract stage passes each decoder its share)."""
    width, height = resize_shape(info.width, info.height, size)
    try:
        starts, duration, rate = _packet_times(path)
        index = _pick(starts, duration, count)
        wanted = {}  # frame start time -> slots that want it
        for slot, frame_index in enumerate(index):
            wanted.setdefault(round(float(starts[frame_index]), 6), []).append(slot)
        pixels = np.zeros((count, height, width, 3), np.uint8)
        filled = np.zeros(count, bool)
        last = None
        with open_input(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = max(0, threads)
            origin = None
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue  # a bad packet loses its frame, not the video
                for frame in frames:
                    if frame.pts is None:
                        continue
                    time = float(frame.pts * stream.time_base)
                    origin = time if origin is None else min(origin, time)
                    slots = wanted.pop(round(time - origin, 6), None)
                    last = frame
                    if slots:
                        image = frame.to_ndarray(format="rgb24", width=width, height=height)
                        pixels[slots] = image
                        filled[slots] = True
                if not wanted:
                    break
        if last is None:
            raise VideoError("decode", "no decodable video frames")
        if not filled.all():
            # Frames whose packets were lost: take the frame decoded last (rare; keeps T fixed).
            pixels[~filled] = last.to_ndarray(format="rgb24", width=width, height=height)
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError("decode", f"pyav: {describe_av_error(error)}") from None
    return SampledFrames(
        centre_crop(pixels, size),
        starts[index].astype(np.float32),
        duration,
        rate or len(starts) / duration,
        "pyav",
    )


def sample_frames(
    path: Path, info: StreamInfo, count: int, size: int, decoder: str = "auto", threads: int = 0
) -> SampledFrames:
    """Sample `count` frames with the chosen decoder; "auto" tries decord, then PyAV (with `threads`)."""
    if decoder == "decord":
        return sample_with_decord(path, info, count, size)
    if decoder == "pyav":
        return sample_with_pyav(path, info, count, size, threads)
    if decoder != "auto":
        raise ValueError(f"unknown decoder {decoder!r} (auto, decord, pyav)")
    try:
        return sample_with_decord(path, info, count, size)
    except VideoError as decord_error:
        try:
            return sample_with_pyav(path, info, count, size, threads)
        except VideoError as pyav_error:
            raise VideoError("decode", f"{decord_error.reason}; {pyav_error.reason}") from None

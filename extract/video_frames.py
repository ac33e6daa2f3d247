"""Decode the T sampled frames of a video, resized so the short side is the model's size, centre-cropped.

PyAV is the default: the reader indexes the video packets in the same demuxing pass that decodes the
sound (`PacketIndex`), so it knows every frame's time and every keyframe before decoding a single
picture. `decode_sampled_frames` then decodes only what the T frames need: it seeks to the keyframe
before a wanted frame when that keyframe lies ahead (long videos cost about T GOPs, not their length),
and it tells the decoder to drop the non-reference frames it does not want (no other frame is
predicted from them, so the wanted frames come out bit for bit as a full decode gives them).
decord is the alternative (`decoder = "decord"`, and the fallback for a file PyAV cannot decode); it
loads an FFmpeg build of its own, so it is imported only when used. Resizing happens inside the
decoder, so a 4K video never exists in memory at full size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import VideoError, describe_av_error
from .probe import StreamInfo, open_input
from .sampling import centre_crop, frames_at, resize_shape, segment_centres

AV_ERRORS = (av.FFmpegError, OSError, ValueError)


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


@dataclass
class PacketIndex:
    """The video packets as demuxing sees them, in decode order, without decoding any: presentation times,
    durations and keyframes. Enough to place the T frames and to plan the seeks that reach them."""

    time_base: Fraction
    rate: float  # the stream's average frame rate (0: unknown)
    pts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)

    @classmethod
    def of(cls, stream) -> PacketIndex:
        return cls(stream.time_base, float(stream.average_rate or stream.guessed_rate or 0))

    def add(self, packet) -> None:
        if packet.pts is None:
            return
        self.pts.append(packet.pts)
        self.ends.append(packet.pts + (packet.duration or 0))
        self.keyframe.append(bool(packet.is_keyframe))

    def timeline(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(frame start times in seconds from the first frame, sorted; their pts; the real duration)."""
        if not self.pts:
            raise VideoError("decode", "no video packets")
        num, den = self.time_base.numerator, self.time_base.denominator  # int / int: float(Fraction), faster
        order = np.argsort(np.asarray(self.pts), kind="stable")
        pts = np.asarray(self.pts, np.int64)[order]
        starts = np.asarray([p * num / den for p in pts.tolist()])
        end = max(self.ends) * num / den
        if end <= starts[-1]:  # packets without durations: one frame period past the last start
            end = starts[-1] + (1.0 / self.rate if self.rate else 0.0)
        return starts - starts[0], pts, float(end - starts[0])

    def entry(self, target: int) -> tuple[int, int] | None:
        """(decode position, pts) of the keyframe to start decoding from to reach the frame at `target`: the
        last keyframe in decode order that is shown at or before it. None: no keyframe before it."""
        best = None
        for position, (pts, key) in enumerate(zip(self.pts, self.keyframe)):
            if key and pts <= target:
                best = (position, pts)
        return best


_scalers = threading.local()


def to_rgb(frame, size: tuple[int, int]) -> np.ndarray:
    """[height, width, 3] uint8 RGB of a decoded frame scaled to size (width, height).

    `frame.to_ndarray(width=..., height=...)` builds a new swscale context for every frame (3-7 ms at
    320x240, more than decoding it); one reformatter per thread keeps its context while sizes and formats
    stay the same. The pixels are the same: the context is built from the same parameters."""
    scaler = getattr(_scalers, "reformatter", None)
    if scaler is None:
        scaler = _scalers.reformatter = VideoReformatter()
    width, height = size
    return scaler.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()


class _FrameDecoder:
    """Decodes the wanted frames of one open video stream, seeking where that saves decoding."""

    def __init__(self, container, stream, index: PacketIndex, wanted: set[int], size: tuple[int, int]):
        self.container, self.stream, self.index = container, stream, index
        self.wanted, self.size = wanted, size
        self.position = {pts: i for i, pts in enumerate(index.pts)}
        self.entries = {pts: index.entry(pts) for pts in wanted}
        self.images: dict[int, np.ndarray] = {}
        self.last = None  # the last frame decoded: stands in for wanted frames whose packets are lost

    def _convert(self, frame) -> None:
        self.images[frame.pts] = to_rgb(frame, self.size)

    def _feed(self, packet, skip: bool) -> None:
        if skip:  # switched per packet: only the frames no other frame is predicted from are dropped
            self.stream.codec_context.skip_frame = "DEFAULT" if packet.pts in self.wanted else "NONREF"
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return  # a bad packet loses its frame, not the video
        for frame in frames:
            if frame.pts is None:
                continue
            self.last = frame
            if frame.pts in self.wanted and frame.pts not in self.images:
                self._convert(frame)

    def pending(self) -> list[int]:
        return sorted(self.wanted - self.images.keys())

    def seeking_pass(self) -> None:
        """Decode each wanted frame from the keyframe before it, seeking forward past whole GOPs no wanted
        frame needs; stops early (for `sequential_pass` to finish) if a seek lands past its target."""
        fed = -1  # decode position of the last packet fed; -1: none since the last seek
        while pending := self.pending():
            entry = self.entries[pending[0]]
            if entry is None:
                return
            if fed < 0 or entry[0] > fed:
                self.container.seek(entry[1], stream=self.stream, backward=True, any_frame=False)
                fed = -1
            for packet in self.container.demux(self.stream):
                if packet.pts is not None:
                    if fed < 0 and packet.pts > pending[0]:
                        return  # the seek overshot (an imprecise index): decode from the start instead
                    fed = self.position.get(packet.pts, fed)
                self._feed(packet, skip=True)
                pending = self.pending()
                ahead = self.entries[pending[0]] if pending else None
                if not pending or (fed >= 0 and ahead is not None and ahead[0] > fed):
                    break  # done, or the next wanted frame starts at a keyframe further on: seek there
            else:
                return  # end of the file

    def sequential_pass(self) -> None:
        """Decode from the first packet on, every frame: what any seekable or unseekable file allows."""
        self.container.seek(min(self.index.pts), stream=self.stream, backward=True, any_frame=False)
        for packet in self.container.demux(self.stream):
            self._feed(packet, skip=False)
            if not self.pending():
                break


def decode_sampled_frames(container, index: PacketIndex, count: int, size: int, threads: int = 0) -> SampledFrames:
    """The T frames of the open container's first video stream, whose packets `index` has read.

    `threads`: FFmpeg's decoding threads (0: one per core of the machine, too many when several decoders of
    several processes share a node; the extract stage passes each decoder its share)."""
    starts, pts, duration = index.timeline()
    chosen = _pick(starts, duration, count)
    stream = container.streams.video[0]
    info_width, info_height = stream.codec_context.width, stream.codec_context.height
    width, height = resize_shape(info_width, info_height, size)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = max(0, threads)
    decoder = _FrameDecoder(container, stream, index, {int(p) for p in pts[chosen]}, (width, height))
    try:
        decoder.seeking_pass()
        if decoder.pending():
            stream.codec_context.skip_frame = "DEFAULT"
            decoder.sequential_pass()
    except AV_ERRORS as error:
        raise VideoError("decode", f"pyav: {describe_av_error(error)}") from None
    if decoder.last is None and not decoder.images:
        raise VideoError("decode", "no decodable video frames")
    pixels = np.zeros((count, height, width, 3), np.uint8)
    for slot, frame_pts in enumerate(pts[chosen]):
        image = decoder.images.get(int(frame_pts))
        if image is None:  # its packet was lost: the frame decoded last (rare; keeps T fixed)
            image = to_rgb(decoder.last, (width, height))
        pixels[slot] = image
    fps = index.rate or len(starts) / duration
    return SampledFrames(centre_crop(pixels, size), starts[chosen].astype(np.float32), duration, fps, "pyav")


def sample_with_pyav(path: Path, info: StreamInfo, count: int, size: int, threads: int = 0) -> SampledFrames:
    """PyAV on a file of its own: one pass to index the packets, then `decode_sampled_frames`."""
    try:
        with open_input(path) as container:
            stream = container.streams.video[0]
            index = PacketIndex.of(stream)
            for packet in container.demux(stream):
                index.add(packet)
            return decode_sampled_frames(container, index, count, size, threads)
    except VideoError:
        raise
    except AV_ERRORS as error:
        raise VideoError("decode", f"pyav: {describe_av_error(error)}") from None


def _decord():
    """decord, imported on first use: it brings a second FFmpeg build into the process. Wheels exist for
    x86_64 Linux only."""
    try:
        import decord
    except ImportError:  # pragma: no cover - exercised on platforms without decord
        raise VideoError("decode", "decord is not installed") from None
    return decord


def sample_with_decord(path: Path, info: StreamInfo, count: int, size: int) -> SampledFrames:
    decord = _decord()
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


DECODERS = ("auto", "pyav", "decord")


def check_decoder(decoder: str) -> str:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} ({', '.join(DECODERS)})")
    return decoder


def sample_frames(
    path: Path, info: StreamInfo, count: int, size: int, decoder: str = "auto", threads: int = 0
) -> SampledFrames:
    """Sample `count` frames with the chosen decoder; "auto" tries PyAV (with `threads`), then decord."""
    if check_decoder(decoder) == "decord":
        return sample_with_decord(path, info, count, size)
    try:
        return sample_with_pyav(path, info, count, size, threads)
    except VideoError as pyav_error:
        if decoder == "pyav":
            raise
        try:
            return sample_with_decord(path, info, count, size)
        except VideoError as decord_error:
            raise VideoError("decode", f"{pyav_error.reason}; {decord_error.reason}") from None

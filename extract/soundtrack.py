"""Decode a video's soundtrack to mono float32 at the audio encoder's rate, on the video's clock.

A bad packet costs only its own samples: the gap is kept as silence in the waveform and left out
of `covered`, so the segments it falls in can be masked instead of pretending to be sound.
`SoundtrackDecoder` takes packets one at a time, so the reader can decode the sound in the same
demuxing pass that indexes the video packets (one open, one read of the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .errors import describe_av_error
from .probe import StreamInfo, open_input

GAP_SECONDS = 0.05  # a jump in timestamps larger than this is lost audio, not jitter


@dataclass
class Soundtrack:
    samples: np.ndarray  # [n] float32 mono at `rate` (emptied once the audio frontend has read it)
    rate: int
    start: float  # seconds of samples[0] on the video's clock (0 = first frame)
    covered: list[tuple[float, float]] = field(default_factory=list)  # real audio spans, video clock
    dropped_packets: int = 0
    length: int = -1  # samples decoded; kept when `samples` is dropped (-1: len(samples))

    def __post_init__(self) -> None:
        if self.length < 0:
            self.length = len(self.samples)

    @property
    def end(self) -> float:
        return self.start + self.length / self.rate

    def without_samples(self) -> Soundtrack:
        """The same soundtrack less its waveform: what the main process needs once the frontend has run
        (spans, clock, dropped packets), without sending 64 KB per second of sound between processes."""
        return Soundtrack(
            np.zeros(0, np.float32), self.rate, self.start, self.covered, self.dropped_packets, self.length
        )


RESAMPLE_SECONDS = 1.0  # decoded sound is resampled in runs this long: one call per AAC frame cost more than decoding
CLOCK_SLACK_SECONDS = 0.01  # above the resampler's delay: how far a gap test on queued sound may err


class SoundtrackDecoder:
    """Decodes the packets of one audio stream as they are demuxed; `result()` gives the soundtrack.

    Decoded frames queue up and go through the resampler a second of sound at a time (the resampler is a
    stream: its output does not depend on how its input is cut), and always before a gap is filled, so
    the waveform is the one a frame-by-frame resampling gives, at a tenth of the calls."""

    def __init__(self, stream, info: StreamInfo, rate: int):
        self.stream, self.info, self.rate = stream, info, rate
        self.resampler: av.AudioResampler | None = None
        self.kind: tuple[str, str, int] | None = None  # (format, layout, rate) of the queued frames
        self.queued = av.AudioFifo()  # decoded sound not yet resampled (copied in C, not one array per frame)
        self.queued_pts: int | None = None
        self.time_base: tuple[int, int] | None = None
        self.chunks: list[np.ndarray] = []
        self.covered: list[list[int]] = []  # [first, end) sample of each run of real sound
        self.position = 0  # samples written so far
        self.first_time: float | None = None
        self.dropped = 0
        self.error: str | None = None  # a demuxing or resampling error that ended the sound early

    def add(self, packet) -> None:
        try:
            frames = packet.decode()
        except av.FFmpegError:
            self.dropped += 1
            return
        for frame in frames:
            time = self._time(frame)
            if time is not None:
                if self.first_time is None:
                    self.first_time = time
                expected = int(round((time - self.first_time) * self.rate))
                if expected - self._position_ahead() > (GAP_SECONDS - CLOCK_SLACK_SECONDS) * self.rate:
                    self._resample_queued()  # the test below must see the position a frame-by-frame pass sees
                    if expected - self.position > GAP_SECONDS * self.rate:  # lost packets: keep the clock
                        self.chunks.append(np.zeros(expected - self.position, np.float32))
                        self.position = expected
            self._queue(frame)

    def _time(self, frame) -> float | None:
        """frame.time without a Fraction per frame (the same float: int / int is correctly rounded)."""
        if frame.pts is None:
            return None
        if self.time_base is None:
            base = frame.time_base
            if base is None:
                return None
            self.time_base = (base.numerator, base.denominator)
        return frame.pts * self.time_base[0] / self.time_base[1]

    def _position_ahead(self) -> float:
        """Where the waveform will end once the queued sound is resampled (ahead by the resampler's delay)."""
        if not self.queued.samples or self.kind is None:
            return self.position
        return self.position + self.queued.samples * self.rate / self.kind[2]

    def _queue(self, frame) -> None:
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind != self.kind:  # the stream changed format mid-way: finish the old sound, start a new resampler
            self._resample_queued()
            if self.resampler is not None:
                self._flush()
            self.resampler, self.kind = av.AudioResampler(format="flt", layout="mono", rate=self.rate), kind
            self.queued = av.AudioFifo()
        if not self.queued.samples:
            self.queued_pts = frame.pts
        frame.pts = None  # the fifo would check the timestamps run on; the gap test above has seen them
        self.queued.write(frame)
        if self.queued.samples >= RESAMPLE_SECONDS * kind[2]:
            self._resample_queued()

    def _resample_queued(self) -> None:
        run = self.queued.read() if self.queued.samples else None
        if run is None or self.resampler is None:
            return
        run.pts = self.queued_pts
        for out in self.resampler.resample(run):
            self._append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))

    def _append(self, data: np.ndarray) -> None:
        if self.covered and self.covered[-1][1] == self.position:
            self.covered[-1][1] += len(data)
        else:
            self.covered.append([self.position, self.position + len(data)])
        self.chunks.append(data)
        self.position += len(data)

    def _flush(self) -> None:
        if self.resampler is None:
            return
        for out in self.resampler.resample(None):
            data = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if self.covered:
                self.covered[-1][1] += len(data)
            self.chunks.append(data)
            self.position += len(data)

    def fail(self, error: Exception) -> None:
        """Demuxing broke off: keep the sound decoded so far (if any), as a bad packet would."""
        self.error = describe_av_error(error)

    def result(self) -> tuple[Soundtrack | None, str | None]:
        """The soundtrack, or (None, reason) when none of it decodes."""
        try:
            self._resample_queued()  # what was decoded before an error is kept, as it was frame by frame
            if self.error is None:
                self._flush()
        except (av.FFmpegError, OSError, ValueError) as error:
            self.error = self.error or describe_av_error(error)
        if self.error is not None and not self.chunks:
            return None, f"audio could not be decoded: {self.error}"
        if self.position == 0:
            return None, f"audio stream present but nothing decoded ({self.dropped} bad packets)"
        offset = (self.first_time or self.info.audio_start) - self.info.video_start
        samples = np.concatenate(self.chunks)
        spans = [(a / self.rate + offset, b / self.rate + offset) for a, b in self.covered]
        return Soundtrack(samples, self.rate, offset, spans, self.dropped), None


def decode_soundtrack(path: Path, info: StreamInfo, rate: int) -> tuple[Soundtrack | None, str | None]:
    """The soundtrack of a file on its own (the reader decodes it in its one pass over the file instead)."""
    if not info.has_audio:
        return None, None
    try:
        with open_input(path) as container:
            decoder = SoundtrackDecoder(container.streams.audio[0], info, rate)
            try:
                for packet in container.demux(decoder.stream):
                    decoder.add(packet)
            except (av.FFmpegError, OSError, ValueError) as error:
                decoder.fail(error)
    except (av.FFmpegError, OSError, ValueError) as error:
        return None, f"audio could not be decoded: {describe_av_error(error)}"
    return decoder.result()

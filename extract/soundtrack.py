"""Decode a video's soundtrack to mono float32 at the audio encoder's rate, on the video's clock.

A bad packet costs only its own samples: the gap is kept as silence in the waveform and left out
of `covered`, so the segments it falls in can be masked instead of pretending to be sound.
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
    samples: np.ndarray  # [n] float32 mono at `rate`
    rate: int
    start: float  # seconds of samples[0] on the video's clock (0 = first frame)
    covered: list[tuple[float, float]] = field(default_factory=list)  # real audio spans, video clock
    dropped_packets: int = 0

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.rate


def decode_soundtrack(path: Path, info: StreamInfo, rate: int) -> tuple[Soundtrack | None, str | None]:
    """The soundtrack, or (None, reason) when the file has none or none of it decodes."""
    if not info.has_audio:
        return None, None
    chunks: list[np.ndarray] = []
    covered: list[list[float]] = []
    position = 0  # samples written so far
    first_time = None
    dropped = 0
    try:
        with open_input(path) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    dropped += 1
                    continue
                for frame in frames:
                    time = frame.time
                    if time is not None:
                        if first_time is None:
                            first_time = time
                        expected = int(round((time - first_time) * rate))
                        if expected - position > GAP_SECONDS * rate:  # lost packets: keep the clock
                            chunks.append(np.zeros(expected - position, np.float32))
                            position = expected
                    for out in resampler.resample(frame):
                        data = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                        start = position / rate
                        if covered and abs(covered[-1][1] - start) < 1e-9:
                            covered[-1][1] = start + len(data) / rate
                        else:
                            covered.append([start, start + len(data) / rate])
                        chunks.append(data)
                        position += len(data)
            for out in resampler.resample(None):
                data = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                if covered:
                    covered[-1][1] += len(data) / rate
                chunks.append(data)
                position += len(data)
    except (av.FFmpegError, OSError, ValueError) as error:
        if not chunks:
            return None, f"audio could not be decoded: {describe_av_error(error)}"
    if position == 0:
        return None, f"audio stream present but nothing decoded ({dropped} bad packets)"
    offset = (first_time or info.audio_start) - info.video_start
    samples = np.concatenate(chunks)
    spans = [(a + offset, b + offset) for a, b in covered]
    return Soundtrack(samples, rate, offset, spans, dropped), None

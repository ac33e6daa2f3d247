"""Test media made on the spot with PyAV: videos whose pixels and sound the tests control."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from gais_pipe.synthetic import encode_frames, encode_mono_audio


def grey_frame(value: int, width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def index_grey(index: int) -> int:
    """A grey level that encodes a frame's index (steps of 4 survive lossy coding)."""
    return (index * 4) % 240


def tone(freq: float, start: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """Silence until `start` seconds, then a sine of `freq` Hz."""
    return lambda t: np.where(t >= start, 0.5 * np.sin(2 * np.pi * freq * t), 0.0)


def silence(t: np.ndarray) -> np.ndarray:
    return np.zeros_like(t)


def make_video(
    path: Path,
    seconds: float = 2.0,
    fps: int = 24,
    size: tuple[int, int] = (64, 48),
    vcodec: str = "libx264",
    acodec: str | None = "aac",
    audio: Callable[[np.ndarray], np.ndarray] | None = None,
    audio_seconds: float | None = None,
    sample_rate: int = 16000,
    frame_value: Callable[[int], int] = index_grey,
    frames: int | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """A video of `frames` (default seconds * fps) frames; frame k is grey level frame_value(k).

    With `acodec` set it has a mono soundtrack of `audio` (default: a 440 Hz tone) lasting
    `audio_seconds` (default: as long as the video).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = frames if frames is not None else int(round(seconds * fps))
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream(vcodec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if vcodec == "libx264":
            video.options = {"qp": "0", "preset": "ultrafast"}
        elif vcodec in ("mpeg4", "mjpeg"):
            video.options = {"qscale": "2"}
            if vcodec == "mjpeg":
                video.pix_fmt = "yuvj420p"
        sound = None
        if acodec is not None:
            sound = container.add_stream(acodec, rate=sample_rate)
            sound.layout = "mono"
        encode_frames(container, video, (grey_frame(frame_value(index), width, height) for index in range(count)))
        if sound is not None:
            duration = audio_seconds if audio_seconds is not None else count / fps
            t = np.arange(int(round(duration * sample_rate))) / sample_rate
            encode_mono_audio(container, sound, (audio or tone(440.0))(t))
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        t = np.arange(int(round(seconds * 16000))) / 16000
        encode_mono_audio(container, sound, tone(440.0)(t))
    return path

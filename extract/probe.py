"""Read a container's headers: which streams it has, frame size and start times. Cheap, no decoding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from .errors import VideoError, describe_av_error

# No FFmpeg log at all: its lines would interleave with the progress bar (failures carry their reason
# instead), and any level but None installs PyAV's callback, which takes the GIL for every ERROR line even
# when filtered. A decoding thread logging a damaged or skipped reference then waits for the GIL while the
# main thread, holding it, frees the codec and waits for that thread: a hang seen with 2 decoder threads.
av.logging.set_level(None)


# Metadata that is not valid UTF-8 must not fail a video. PyAV before 19 raises on it unless told
# metadata_errors="ignore"; PyAV 19 dropped that argument (passing it fails every video).
def open_options(pyav_version: str) -> dict:
    return {"metadata_errors": "ignore"} if int(pyav_version.split(".")[0]) < 19 else {}


_OPEN_OPTIONS = open_options(av.__version__)


def open_input(path: Path):
    """av.open for reading, with the options this PyAV version takes."""
    return av.open(str(path), **_OPEN_OPTIONS)


@dataclass(frozen=True)
class StreamInfo:
    width: int
    height: int
    has_audio: bool
    video_start: float  # seconds; the clock origin for frames and sound alike
    audio_start: float  # seconds, same time base as video_start


def _start_seconds(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def audio_stream(container):
    """The first audio stream FFmpeg can decode, or None (an undecodable codec is treated as no sound)."""
    audio = container.streams.audio[0] if container.streams.audio else None
    return audio if audio is not None and audio.codec_context is not None else None


def stream_info(container) -> StreamInfo:
    """The headers of an open container; a file without a usable video stream is a probe failure."""
    if not container.streams.video:
        raise VideoError("probe", "no video stream")
    video = container.streams.video[0]
    if video.codec_context is None:
        raise VideoError("probe", "no decoder for the video codec")
    width, height = video.codec_context.width, video.codec_context.height
    if not width or not height:
        raise VideoError("probe", "video stream has no frame size (unknown or broken codec)")
    audio = audio_stream(container)
    return StreamInfo(
        width=width,
        height=height,
        has_audio=audio is not None,
        video_start=_start_seconds(video),
        audio_start=_start_seconds(audio) if audio is not None else 0.0,
    )


def check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise VideoError("probe", "empty file (0 bytes)")


def unreadable(error: Exception) -> VideoError:
    return VideoError("probe", f"not a readable video ({describe_av_error(error)})")


def probe(path: Path) -> StreamInfo:
    check_not_empty(path)
    try:
        with open_input(path) as container:
            return stream_info(container)
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise unreadable(error) from None

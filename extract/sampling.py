"""Where in a video the T frames come from: one at the centre of each of T equal segments.

Everything here works on the video's real duration in seconds, measured from its first frame,
so that frames and sound (which use the same clock) stay aligned.
"""

from __future__ import annotations

import numpy as np


def segment_bounds(duration: float, count: int) -> np.ndarray:
    """[count, 2] start and end times of `count` equal segments covering [0, duration]."""
    edges = np.linspace(0.0, max(duration, 0.0), count + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def segment_centres(duration: float, count: int) -> np.ndarray:
    return segment_bounds(duration, count).mean(axis=1)


def frames_at(times: np.ndarray, frame_starts: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time: the last frame that starts at or before it.

    `frame_starts` are the presentation times of all frames, sorted. A video with fewer frames
    than times repeats frames rather than inventing any.
    """
    index = np.searchsorted(frame_starts, times, side="right") - 1
    return np.clip(index, 0, len(frame_starts) - 1)


def resize_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) that scales the short side to `short_side` and keeps the aspect ratio."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Crop [N, H, W, C] frames to [N, size, size, C] around the centre (CLIP's crop)."""
    height, width = frames.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return frames[:, top : top + size, left : left + size]

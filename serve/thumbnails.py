"""Thumbnail strips of indexed videos: the T frames the features were computed from, side by side in
one JPEG, so a result shows exactly the moments its gate and attention strips talk about.

Decoding a video costs tens of milliseconds to seconds, so a strip is made once, at its first
request, and kept in <workdir>/thumbnails/. Its name carries the video's id, size and mtime, so a
changed video gets a new strip; it is written under a temporary name and renamed, so a reader never
sees half a file, and two requests for the same new strip decode it once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np


class Thumbnails:
    def __init__(self, folder: Path, size: int):
        self.folder = Path(folder)
        self.size = size
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def path(self, entry: dict, frames: int) -> Path:
        identity = f"{entry['id']}\0{entry.get('size')}\0{entry.get('mtime')}\0{frames}\0{self.size}"
        return self.folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.jpg"

    def strip(self, entry: dict, frames: int) -> Path:
        """The strip's file, made now if this is its first request; FileNotFoundError without the video."""
        out = self.path(entry, frames)
        if out.exists():
            return out
        with self._lock(out.stem):
            if out.exists():  # made by the request that held the lock before us
                return out
            video = Path(entry["path"]) if entry.get("path") else None
            if video is None or not video.is_file():
                raise FileNotFoundError(f"{entry['id']}: the video file is not on this machine")
            write_strip(video, frames, self.size, out)
        return out


def write_strip(video: Path, frames: int, size: int, out: Path) -> None:
    from PIL import Image

    from gais_pipe.extract.probe import probe
    from gais_pipe.extract.video_frames import sample_frames

    pixels = sample_frames(video, probe(video), frames, size).pixels  # [T, size, size, 3] uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.{threading.get_ident()}.tmp.jpg")
    Image.fromarray(np.concatenate(list(pixels), axis=1)).save(tmp, "JPEG", quality=85)
    os.replace(tmp, out)

"""Find the videos to extract: a folder searched recursively, or a text file listing paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset(".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .flv .wmv .3gp .ts .mts .ogv .gif".split())


@dataclass(frozen=True)
class VideoRef:
    id: str  # path relative to the VIDEOS folder (or as written in the list file), posix form
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class Problem:
    id: str
    stage: str
    reason: str


def _ref(video_id: str, path: Path) -> VideoRef | Problem:
    try:
        stat = path.stat()
    except OSError as error:
        return Problem(video_id, "discover", f"cannot stat: {error.strerror or error}")
    if not path.is_file():
        return Problem(video_id, "discover", "not a regular file")
    return VideoRef(video_id, path, stat.st_size, stat.st_mtime)


def discover(videos: Path) -> tuple[list[VideoRef], list[Problem]]:
    """Every video under a folder (by extension), or every path in a list file, sorted by id."""
    found: list[VideoRef | Problem] = []
    if videos.is_dir():
        for root, dirs, files in os.walk(videos):
            dirs.sort()
            for name in files:
                path = Path(root) / name
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    found.append(_ref(path.relative_to(videos).as_posix(), path))
    elif videos.is_file():
        for line in videos.read_text(encoding="utf-8").splitlines():
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = Path(entry).expanduser()
                found.append(_ref(entry, path if path.is_absolute() else videos.parent / path))
    else:
        raise FileNotFoundError(f"{videos}: no such folder or list file")
    refs = sorted((f for f in found if isinstance(f, VideoRef)), key=lambda r: r.id)
    problems = [f for f in found if isinstance(f, Problem)]
    return refs, problems

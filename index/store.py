"""The re-rank store: the heads' per-frame inputs for every indexed video, one row per index id.

Plain .npy files opened memory-mapped, so a query reads only the rows of its K candidates, however
large the collection. Rows are only ever appended; a new version is written beside the old and
renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gais_pipe.workdir.files import read_json

COLUMNS = ("frame_features", "audio_features", "audio_mask", "frame_times")


class RerankStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def exists(self) -> bool:
        return (self.folder / "videos.json").exists()

    def videos(self) -> list[dict]:
        """Per row: id, path, duration, shard, row in shard, file size and mtime."""
        videos = read_json(self.folder / "videos.json")
        if videos is None:
            raise FileNotFoundError(f"{self.folder / 'videos.json'}: missing; run `gais-pipe build-index`")
        return videos

    def column(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The chosen rows of every column, read from the memory map."""
        rows = np.asarray(rows)
        return {name: np.asarray(self.column(name)[rows]) for name in COLUMNS}

    def append(self, columns: dict[str, np.ndarray], videos: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        old = self.videos() if self.exists() else []
        for name in COLUMNS:
            path = self.folder / f"{name}.npy"
            new = columns[name]
            total = (len(old) + len(new), *new.shape[1:])
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=new.dtype, shape=total)
            if old:
                out[: len(old)] = self.column(name)
            out[len(old) :] = new
            out.flush()
            del out
            os.replace(tmp, path)
        tmp = self.folder / f".videos.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(old + videos))
        os.replace(tmp, self.folder / "videos.json")

"""The re-rank store: the heads' per-frame inputs and the index embedding of every indexed video, one
row per index id, plus each video's metadata.

Why this shape, at a million videos and more:
- Features live in segments (`segments/seg-NNNNNN/<column>.npy`), plain .npy files opened
  memory-mapped, so a query reads only the rows of its K candidates. A segment is written once, by
  appending chunk after chunk to a file whose header already holds its final shape, and never
  changes after: a later build links it (a hard link, no copy) into its own generation and adds new
  segments beside it. Nothing is ever rewritten, and the writer's memory is one chunk.
- Metadata lives in SQLite (`videos.sqlite`, the standard library's): one indexed table read row by
  row, so `video(row)` and `find(id)` cost a B-tree lookup whatever the collection, where a JSON list
  would be parsed whole (hundreds of MB at 10M videos). Published stores are opened read-only and
  `immutable`, so readers take no locks.
- `embedding` is the vector that went into the index (float32), kept for exact search and for
  re-scoring an approximate index's candidates exactly.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gais_pipe.workdir.files import read_json

COLUMNS = ("frame_features", "audio_features", "audio_mask", "frame_times")
EMBEDDING = "embedding"
FIELDS = ("id", "path", "duration", "shard", "row", "size", "mtime")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS videos (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, path TEXT, "
    "duration REAL, shard TEXT, shard_row INTEGER, size INTEGER, mtime REAL)"
)
_SELECT = "SELECT id, path, duration, shard, shard_row, size, mtime FROM videos"


@dataclass(frozen=True)
class Segment:
    name: str
    start: int
    count: int


class RerankStore:
    """A published store, read-only. Segments and the metadata connection are opened at once, so a
    reader keeps working even if a later build removes this generation's folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._segments: list[Segment] | None = None
        self._maps: dict[tuple[str, str], np.ndarray] = {}
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return (self.folder / "segments.json").exists()

    # --- metadata -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.folder / "videos.sqlite"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing; run `gais-pipe build-index`")
            uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._db

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._connection().execute(sql, args).fetchall()

    def __len__(self) -> int:
        return sum(s.count for s in self.segments())

    def video(self, row: int) -> dict:
        """Id, path, duration, shard, row in shard, file size and mtime of one indexed row."""
        found = self._query(f"{_SELECT} WHERE row = ?", (int(row),))
        if not found:
            raise IndexError(f"row {row} is not in the index ({len(self)} videos)")
        return dict(zip(FIELDS, found[0]))

    def videos(self) -> list[dict]:
        """Every row's metadata, in row order. Holds them all in memory: for small collections and
        tests; use `video(row)`, `find` and `len` on large ones."""
        return [dict(zip(FIELDS, r)) for r in self._query(f"{_SELECT} ORDER BY row")]

    def row_of(self, video_id: str) -> int | None:
        """The row of a video by id alone (the id column is indexed), None when it is not indexed."""
        found = self._query("SELECT row FROM videos WHERE id = ?", (video_id,))
        return int(found[0][0]) if found else None

    def find(self, video: str) -> int | None:
        """The row of a video given by id or path (a path lookup scans the table)."""
        for sql in ("SELECT row FROM videos WHERE id = ?", "SELECT row FROM videos WHERE path = ?"):
            found = self._query(sql, (video,))
            if found:
                return int(found[0][0])
        resolved = str(Path(video).resolve())
        found = self._query("SELECT row FROM videos WHERE path = ?", (resolved,))
        return int(found[0][0]) if found else None

    # --- features -------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        if self._segments is None:
            listed = read_json(self.folder / "segments.json")
            if listed is None:
                raise FileNotFoundError(f"{self.folder / 'segments.json'}: missing; run `gais-pipe build-index`")
            self._segments = [Segment(**s) for s in listed]
        return self._segments

    def _map(self, segment: Segment, name: str) -> np.ndarray:
        key = (segment.name, name)
        if key not in self._maps:
            self._maps[key] = np.load(self.folder / "segments" / segment.name / f"{name}.npy", mmap_mode="r")
        return self._maps[key]

    def open_all(self) -> None:
        """Map every segment and open the metadata now (a reader that must outlive a cleanup)."""
        self._connection()
        for segment in self.segments():
            for name in (*COLUMNS, EMBEDDING):
                self._map(segment, name)

    def _gather(self, names: tuple[str, ...], rows: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        segments = self.segments()
        starts = [s.start for s in segments]
        total = len(self)
        if rows.size and (rows.min() < 0 or rows.max() >= total):
            raise IndexError(f"rows outside the store's {total} videos")
        which = np.array([bisect.bisect_right(starts, int(r)) - 1 for r in rows], dtype=np.int64)
        out: dict[str, np.ndarray] = {}
        for position in np.unique(which) if rows.size else [0]:
            segment = segments[position]
            chosen = np.nonzero(which == position)[0]
            local = rows[chosen] - segment.start
            order = np.argsort(local, kind="stable")  # memory-mapped rows read in file order
            for name in names:
                values = self._map(segment, name)[local[order]]
                if name not in out:
                    out[name] = np.empty((len(rows), *values.shape[1:]), dtype=values.dtype)
                out[name][chosen[order]] = values
        return out

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The chosen rows (in the order asked) of every per-frame column, read from the memory maps."""
        return self._gather(COLUMNS, rows)

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), D] float32: the indexed vectors of the chosen rows."""
        return self._gather((EMBEDDING,), rows)[EMBEDDING]

    def iter_embeddings(self, chunk: int = 65536, start_row: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, [n, D]) blocks of the indexed vectors from `start_row` on, read with plain file
        reads so that streaming through millions of rows does not grow the process's mapped memory."""
        for segment in self.segments():
            path = self.folder / "segments" / segment.name / f"{EMBEDDING}.npy"
            first = max(0, start_row - segment.start)
            for lo in range(first, segment.count, chunk):
                hi = min(segment.count, lo + chunk)
                yield segment.start + lo, read_npy_rows(path, lo, hi)

    def close(self) -> None:
        self._maps.clear()
        if self._db is not None:
            self._db.close()
            self._db = None


def read_npy_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a C-ordered .npy file, read (not mapped)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not store segments")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        handle.seek(handle.tell() + start * row_bytes)
        out = np.empty((stop - start, *shape[1:]), dtype=dtype)
        handle.readinto(out.data.cast("B"))
        return out


class StoreWriter:
    """Builds a store in a new folder: the previous store's segments linked in (no copy), its metadata
    copied, then new rows appended chunk by chunk into segments of at most `segment_rows` rows whose
    sizes are fixed up front (the build knows how many videos it adds)."""

    def __init__(self, folder: Path, new_rows: int, segment_rows: int, previous: RerankStore | None = None):
        self.folder = Path(folder)
        (self.folder / "segments").mkdir(parents=True, exist_ok=True)
        self.segments: list[Segment] = []
        if previous is not None:
            for segment in previous.segments():
                _link_folder(previous.folder / "segments" / segment.name, self.folder / "segments" / segment.name)
                self.segments.append(segment)
            shutil.copyfile(previous.folder / "videos.sqlite", self.folder / "videos.sqlite")
        self.count = sum(s.count for s in self.segments)
        self.remaining, self.segment_rows = int(new_rows), max(1, int(segment_rows))
        self.db = sqlite3.connect(self.folder / "videos.sqlite")
        self.db.execute(_SCHEMA)
        self._open: dict[str, io.BufferedWriter] = {}
        self._left_in_segment = 0

    def append(self, columns: dict[str, np.ndarray], embeddings: np.ndarray, metadata: list[tuple]) -> None:
        """Rows for the next len(metadata) ids: columns by name, [n, D] vectors, and per row a tuple
        (id, path, duration, shard, row in shard, size, mtime)."""
        count = len(metadata)
        if count > self.remaining:
            raise ValueError(f"store writer: {count} rows given, {self.remaining} planned")
        arrays = {**{name: columns[name] for name in COLUMNS}, EMBEDDING: np.asarray(embeddings, np.float32)}
        done = 0
        while done < count:
            if self._left_in_segment == 0:
                self._start_segment(arrays, self.remaining - done)
            take = min(self._left_in_segment, count - done)
            for name, handle in self._open.items():
                handle.write(np.ascontiguousarray(arrays[name][done : done + take]).data)  # no copy
            self._left_in_segment -= take
            done += take
            if self._left_in_segment == 0:
                self._close_segment()
        self.db.executemany(
            "INSERT INTO videos (row, id, path, duration, shard, shard_row, size, mtime) VALUES (?,?,?,?,?,?,?,?)",
            [(self.count + i, *m) for i, m in enumerate(metadata)],
        )
        self.count += count
        self.remaining -= count

    def _start_segment(self, arrays: dict[str, np.ndarray], planned: int) -> None:
        size = min(self.segment_rows, planned)
        start = self.segments[-1].start + self.segments[-1].count if self.segments else 0
        segment = Segment(f"seg-{len(self.segments):06d}", start, size)
        folder = self.folder / "segments" / segment.name
        folder.mkdir(parents=True, exist_ok=True)
        for name, values in arrays.items():
            handle = open(folder / f"{name}.npy", "wb")
            header = {"descr": np.lib.format.dtype_to_descr(values.dtype), "fortran_order": False}
            np.lib.format.write_array_header_2_0(handle, {**header, "shape": (size, *values.shape[1:])})
            self._open[name] = handle
        self.segments.append(segment)
        self._left_in_segment = size

    def _close_segment(self) -> None:
        for handle in self._open.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._open = {}

    def finish(self) -> None:
        if self.remaining or self._left_in_segment:
            raise RuntimeError(f"store writer: {self.remaining} planned rows were never written")
        self.db.commit()
        self.db.close()
        (self.folder / "segments.json").write_text(json.dumps([s.__dict__ for s in self.segments]))

    def abort(self) -> None:
        self._close_segment()
        self.db.close()


def _link_folder(source: Path, target: Path) -> None:
    """Hard-link every file of a segment (same file system: the index folder); copy if linking fails."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copyfile(path, target / path.name)

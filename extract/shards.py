"""The writer of feature shards (the format and its readers are `gais_pipe.workdir.shards`).

A shard is written whole to a temporary name and renamed into place, so a shard that exists is
complete: a run killed at any moment leaves no half-written shard behind.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np

from gais_pipe.workdir.shards import FORMAT_VERSION, ROW_FIELDS, STRING_FIELDS

from .mapper import FeatureRow

if [f.name for f in fields(FeatureRow)] != ROW_FIELDS:
    raise ImportError("extract.mapper.FeatureRow and workdir.shards.ROW_FIELDS disagree on the shard's columns")


def write_shard(path: Path, rows: list[FeatureRow], attrs: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as handle:
        for name in ROW_FIELDS:
            values = [getattr(row, name) for row in rows]
            if name in STRING_FIELDS:
                handle.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
            else:
                handle.create_dataset(name, data=np.stack([np.asarray(v) for v in values]))
        for key, value in attrs.items():
            handle.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True)
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["videos"] = len(rows)
    with open(tmp, "rb+") as raw:
        os.fsync(raw.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Collects rows and writes a shard every `max_videos` rows or `max_seconds` seconds."""

    def __init__(
        self,
        folder: Path,
        attrs: dict,
        worker: int,
        max_videos: int,
        max_seconds: float,
        on_written: Callable[[Path, int], None],
    ):
        self.folder, self.attrs, self.worker = folder, attrs, worker
        self.max_videos, self.max_seconds, self.on_written = max_videos, max_seconds, on_written
        self.rows: list[FeatureRow] = []
        self.opened = time.monotonic()
        self.seconds = 0.0  # spent writing shards
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: list[FeatureRow]) -> None:
        if not self.rows:
            self.opened = time.monotonic()
        self.rows.extend(rows)
        while len(self.rows) >= self.max_videos:
            self._write(self.max_videos)
        if self.rows and time.monotonic() - self.opened >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._write(len(self.rows))

    def _write(self, count: int) -> None:
        start = time.perf_counter()
        rows, self.rows = self.rows[:count], self.rows[count:]
        path = self.folder / f"shard-{time.time_ns():x}-w{self.worker:03d}.h5"
        write_shard(path, rows, {**self.attrs, "worker": self.worker, "created": time.time()})
        self.on_written(path, len(rows))
        self.opened = time.monotonic()
        self.seconds += time.perf_counter() - start


class BackgroundWriter:
    """A ShardWriter in a thread of its own, so that building HDF5 files and their fsync overlap the encoding
    of the next batch instead of stalling the GPU. Rows keep their order; at most `depth` batches wait, so
    a kill loses no more than that beyond what the plain writer would. An error in the thread (a full disk)
    is raised in the caller's next `add` or in `close`."""

    def __init__(self, writer: ShardWriter, depth: int = 2):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (rows := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.add(rows)
                except BaseException as error:  # handed to the caller, who decides
                    self.error = error

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def add(self, rows: list[FeatureRow]) -> None:
        self._raise()
        self.queue.put(rows)

    def close(self) -> None:
        """Write everything queued and what the last shard holds; the writer is done afterwards."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._raise()
        self.writer.flush()

"""What the service serves: one loaded `Searcher`, its answers as JSON-ready dicts, and a newer index
picked up without a restart.

Inference runs one query at a time under a lock. The heads and the text tower are small, one query
already has the search threads (`query.torch_threads`), and two queries at once on 2 cores only fight over
them; requests for thumbnails and video bytes run beside it, unlocked. The engine is `query`'s: the ONNX
graphs exported by build-index, through onnxruntime, where they can answer (faster per search than torch
here, BENCHMARKS.md), else torch; health says which and why.

A new `build-index` writes a new generation folder (its `record.json` written last in it) and then
switches `index/CURRENT` to it, atomically. Each request compares CURRENT's inode and mtime with the
loaded one's; a change loads the new index beside the old and swaps it in whole. A search that saw
the pointer change while it ran is answered again from the new index, never half from each (the old
generation's files stay open, so it never fails half-way either). While there is no index at all
searches are refused with 503; a new index that cannot be loaded leaves the old one serving, and
every answer says so.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gais_pipe.index.search import Searcher, open_searcher
from gais_pipe.workdir import Workdir

from .thumbnails import Thumbnails

Stamp = tuple[int, int] | None


class Unavailable(RuntimeError):
    """The index cannot answer now (being rebuilt); a client may try again shortly."""


@dataclass
class Loaded:
    searcher: Searcher
    engine_note: str | None  # why torch answers instead of the ONNX engine, or None
    stamp: Stamp
    loaded_at: float
    frames: int  # T, the frames sampled per video


class Engine:
    def __init__(self, workdir: Path, config: dict, checkpoint: Path | None = None, engine: str = "auto"):
        self.work = Workdir(workdir)
        self.engine = engine
        self.config = config
        self.checkpoint = checkpoint
        self._inference = threading.Lock()
        self._reload = threading.Lock()
        self._failed_stamp: Stamp = None
        self.problem: str | None = None  # why a newer index on disk is not the one served
        self.thumbnails = Thumbnails(self.work.root / "thumbnails", int(config["serve"]["thumbnail_size"]))
        self.current = self._load()

    # --- loading -----------------------------------------------------------------------------
    def _stamp(self) -> Stamp:
        try:
            stat = os.stat(self.work.index_dir / "CURRENT")  # switched last, after the record is written
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _load(self) -> Loaded:
        stamp = self._stamp()
        searcher, note = open_searcher(self.work.root, self.config, self.checkpoint, self.engine)
        if searcher.engine == "torch":
            from gais_pipe.index.torch_scorer import limit_threads

            limit_threads(self.config)  # inference is serial (the lock): its threads are the whole budget
        frames = int((self.work.identity() or {})["identity"]["features"]["frames"])
        return Loaded(searcher, note, stamp, time.time(), frames)

    def fresh(self) -> Loaded:
        """The loaded index, reloaded first when the index on disk has changed."""
        stamp = self._stamp()
        if stamp == self.current.stamp or stamp == self._failed_stamp:
            return self.current
        if stamp is None:
            raise Unavailable("the index is being rebuilt; try again in a moment")
        with self._reload:
            if stamp != self.current.stamp and stamp != self._failed_stamp:
                try:
                    self.current, self.problem, self._failed_stamp = self._load(), None, None
                except Exception as error:  # keep serving what was loaded, and say so
                    self._failed_stamp = stamp
                    self.problem = (
                        f"serving the index built {_when(self.current.searcher.record)}: the index on disk "
                        f"cannot be loaded ({error})"
                    )
        return self.current

    # --- answers -----------------------------------------------------------------------------
    def search(self, text: str, k: int, rerank_k: int) -> dict:
        """The ranked hits with their frames, answered wholly from one index even across a rebuild."""
        for _ in range(3):
            loaded = self.fresh()
            started = time.perf_counter()
            try:
                with self._inference:
                    pairs = loaded.searcher.search_frames(text, k, rerank_k)
            except Exception:
                if self._stamp() == loaded.stamp:
                    raise
                continue  # the store changed under the search (a file gone, rows renumbered): the new index
            if self._stamp() != loaded.stamp:
                continue
            searcher = loaded.searcher
            results = []
            for hit, frames in pairs:
                entry = searcher.videos[searcher.rows_by_id[hit.video]]
                results.append({**asdict(hit), "duration": entry.get("duration"), "frames": asdict(frames)})
            return {
                "query": text,
                "results": results,
                "took_ms": round(1000 * (time.perf_counter() - started), 2),
                "index": self.index_summary(loaded),
                "warning": self.problem,
            }
        raise Unavailable("the index is being rebuilt; try again in a moment")

    def entry(self, video_id: str) -> dict:
        """An indexed video's metadata; KeyError for any id the index does not hold."""
        searcher = self.fresh().searcher
        row = searcher.rows_by_id[video_id]
        entry = dict(searcher.videos[row])
        times = searcher.store.rows(np.array([row]))["frame_times"][0]
        return {**entry, "frame_times": [float(t) for t in times]}

    def video_file(self, video_id: str) -> Path:
        """The file of an indexed video, found from the index's own metadata (never from the request)."""
        searcher = self.fresh().searcher
        path = searcher.videos[searcher.rows_by_id[video_id]]["path"]
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"{video_id}: the video file is not on this machine")
        return Path(path)

    def thumbnail_strip(self, video_id: str) -> Path:
        """The JPEG strip of an indexed video's T sampled frames, made at its first request."""
        loaded = self.fresh()
        entry = loaded.searcher.videos[loaded.searcher.rows_by_id[video_id]]
        return self.thumbnails.strip(entry, loaded.frames)

    def index_summary(self, loaded: Loaded | None = None) -> dict:
        loaded = loaded or self.current
        record = loaded.searcher.record
        return {
            "mode": record["identity"]["mode"],
            "checkpoint": record["identity"]["checkpoint"],
            "kind": record.get("kind"),
            "videos": int(loaded.searcher.index.ntotal),
            "engine": loaded.searcher.engine,
            "engine_note": loaded.engine_note,
            "built": record.get("built"),
            "built_at": _when(record),
            "loaded_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(loaded.loaded_at)),
        }

    def health(self) -> dict:
        """What is served, and whether videos were extracted since its index was built."""
        loaded = self.fresh()
        record = loaded.searcher.record
        stale = record.get("manifest") is not None and record["manifest"] != self.work.manifest_digest()
        return {
            "status": "ok",
            "index": self.index_summary(loaded),
            "frames": loaded.frames,
            "stale": stale,
            "warning": self.problem
            or ("videos were extracted since this index was built; run `gais-pipe build-index`" if stale else None),
        }


def _when(record: dict) -> str:
    built = record.get("built")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(built)) if built else "at an unknown time"

"""The ledger of a workdir (layout in `gais_pipe.workdir`): what the features in it are, which shards
hold them, what failed, who is writing, and where each stage keeps its outputs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from gais_pipe.config import differing_keys

from .features import RowRef
from .files import read_json, write_json_atomically
from .hashing import sha256_cached
from .shards import read_attrs, read_index


class WorkdirError(RuntimeError):
    """A workdir that cannot be used as asked: other features, or another run holding it."""


class Workdir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.features_dir = self.root / "features"
        self.models_dir = self.root / "models"
        self.locks_dir = self.root / "locks"
        self.identity_path = self.root / "workdir.json"
        self.manifest_path = self.root / "manifest.json"
        self.failures_path = self.root / "failures.jsonl"
        self.text_features_path = self.root / "text_features.h5"
        self.runs_dir = self.root / "runs"
        self.index_dir = self.root / "index"
        self.hashes_path = self.root / "hashes.json"

    def create(self) -> None:
        for folder in (self.features_dir, self.models_dir, self.locks_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # --- identity -------------------------------------------------------------------------
    def identity(self) -> dict | None:
        return read_json(self.identity_path)

    def claim_identity(self, record: dict) -> None:
        """Fix the workdir's features on first use; refuse, naming the differences, on any later mismatch."""
        with self._manifest_lock():
            current = self.identity()
            if current is None:
                write_json_atomically(self.identity_path, record)
                return
        if current["feature_hash"] != record["feature_hash"]:
            keys = differing_keys(current["identity"], record["identity"])
            raise WorkdirError(
                f"{self.root}: holds features of another config (hash {current['feature_hash']}, config "
                f"{current.get('config_name')!r}); this run's hash is {record['feature_hash']}; differing: "
                f"{', '.join(keys)}. Use another --workdir, or the workdir's own config"
            )

    # --- locks ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def worker_lock(self, index: int, count: int):
        """Refuse a second run on the same worker slot, and runs that split the work differently."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        path = self.locks_dir / f"extract-{index}.lock"
        handle = open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise WorkdirError(
                    f"{self.root}: another extract run holds it (worker {index}: {handle.read().strip()})"
                ) from None
            for other in self.locks_dir.glob("extract-*.lock"):
                if other == path:
                    continue
                with open(other) as probe:
                    try:
                        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except BlockingIOError:
                        held = json.loads(probe.read() or "{}")
                        if held.get("num_shards") != count:
                            raise WorkdirError(
                                f"{self.root}: another extract run splits it into {held.get('num_shards')} shards, "
                                f"this one into {count}"
                            ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "num_shards": count,
                        "since": time.time(),
                    }
                )
            )
            handle.flush()
            yield
        finally:
            handle.close()

    @contextlib.contextmanager
    def _manifest_lock(self):
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with open(self.locks_dir / "manifest.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # --- manifest -------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        return read_json(self.manifest_path, default={"shards": []})

    def add_shard(self, path: Path, videos: int) -> None:
        with self._manifest_lock():
            manifest = self._read_manifest()
            manifest["shards"].append({"file": path.name, "videos": videos, "added": time.time()})
            write_json_atomically(self.manifest_path, manifest)

    def remove_stale_temporaries(self, worker: int) -> None:
        """Half-written shards of a killed run of this worker slot (we hold its lock, so none is live)."""
        for tmp in self.features_dir.glob(f".shard-*-w{worker:03d}.h5.*.tmp"):
            tmp.unlink(missing_ok=True)

    def reconcile(self) -> list[str]:
        """Add complete shards a killed run wrote but did not list; drop listed shards that are gone."""
        notes = []
        with self._manifest_lock():
            manifest = self._read_manifest()
            listed = {entry["file"] for entry in manifest["shards"]}
            on_disk = {p.name for p in self.features_dir.glob("shard-*.h5")}
            for name in sorted(on_disk - listed):
                attrs = read_attrs(self.features_dir / name)
                manifest["shards"].append(
                    {"file": name, "videos": int(attrs["videos"]), "added": float(attrs["created"])}
                )
                notes.append(f"listed shard {name}, written by an interrupted run")
            gone = listed - on_disk
            if gone:
                manifest["shards"] = [e for e in manifest["shards"] if e["file"] not in gone]
                notes.extend(
                    f"shard {name} is missing from disk; its videos will be extracted again" for name in sorted(gone)
                )
            if notes:
                write_json_atomically(self.manifest_path, manifest)
        return notes

    def manifest_digest(self) -> str:
        """A fingerprint of the shard list. Shards are written once and never changed, so while it stays
        the same so does every video's row: a reader can tell nothing was extracted since it last looked
        without opening any shard."""
        entries = [(e["file"], e["videos"]) for e in self._read_manifest()["shards"]]
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def sha256(self, path: Path) -> str:
        """A weights file's sha256, hashed once per (path, size, mtime) and cached in hashes.json."""
        return sha256_cached(path, self.hashes_path)

    def shards(self) -> list[Path]:
        return [self.features_dir / e["file"] for e in self._read_manifest()["shards"]]

    def rows(self) -> dict[str, RowRef]:
        """Where each video's features are; a video extracted again is found in its newest shard."""
        found: dict[str, RowRef] = {}
        for shard in self.shards():
            index = read_index(shard)
            for row, (video_id, size, mtime) in enumerate(
                zip(index["video_id"], index["file_size"], index["file_mtime"])
            ):
                found[str(video_id)] = RowRef(shard, row, int(size), float(mtime))
        return found

    # --- failures -------------------------------------------------------------------------
    def log_failure(
        self, video_id: str, stage: str, reason: str, size: int | None = None, mtime: float | None = None
    ) -> None:
        line = json.dumps(
            {
                "video": video_id,
                "stage": stage,
                "reason": reason,
                "size": size,
                "mtime": mtime,
                "time": time.time(),
            }
        )
        with open(
            self.failures_path, "a", encoding="utf-8"
        ) as handle:  # O_APPEND: whole lines, even from several workers
            handle.write(line + "\n")

    def failures(self) -> list[dict]:
        """The latest failure of each video that has not been extracted since."""
        if not self.failures_path.exists():
            return []
        latest: dict[str, dict] = {}
        for line in self.failures_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                latest[record["video"]] = record
        extracted = self.rows()
        return [
            r
            for r in latest.values()
            if not (
                r["video"] in extracted
                and extracted[r["video"]].size == r["size"]
                and np.isclose(extracted[r["video"]].mtime, r["mtime"] or -1)
            )
        ]

"""The build-index stage: one embedding per extracted video into FAISS, plus the re-rank store.

Before any training the embedding is CLIP's mean-pooled frames (zero-shot); with a checkpoint it is
the stage-1 embedding e_v of the heads (METHOD.md section 6). Re-running after more videos were
extracted adds only those, when nothing else changed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from gais_pipe.distributed import resolve_device
from gais_pipe.index import faiss_index
from gais_pipe.index.embeddings import video_embeddings
from gais_pipe.index.layout import read_record
from gais_pipe.index.store import COLUMNS, RerankStore
from gais_pipe.retrieval.checkpoints import latest_checkpoint, load_head
from gais_pipe.workdir import Workdir, WorkdirError, read_features, write_json_atomically
from gais_pipe.workdir.shards import read_attrs


def _source_roots(work: Workdir) -> dict[str, str | None]:
    return {shard.name: read_attrs(shard).get("source_root") for shard in work.shards()}


def _video_path(video_id: str, root: str | None) -> str | None:
    return video_id if Path(video_id).is_absolute() else (str(Path(root) / video_id) if root else None)


def run_build_index(workdir: Path, config: dict, checkpoint: Path | None = None, zero_shot: bool = False) -> dict:
    work = Workdir(workdir)
    features = work.identity()
    if features is None:
        raise WorkdirError(f"{workdir}: no features yet; run `gais-pipe extract` first")
    device = resolve_device(config["runtime"]["device"])
    model, path = None, None
    if not zero_shot:
        try:
            path = checkpoint or latest_checkpoint(work)
        except FileNotFoundError:
            path = None  # nothing trained yet: zero-shot
        if path is not None:
            model, _, path = load_head(work, path, device)
    identity = {
        "feature_hash": features["feature_hash"],
        "mode": "stage1" if model is not None else "zero-shot",
        "checkpoint": str(path) if path else None,
        "checkpoint_sha256": work.sha256(path) if path else None,
    }
    folder = work.index_dir
    store = RerankStore(folder / "store")
    manifest = work.manifest_digest()  # before reading the shards: a shard added meanwhile makes it differ
    located = work.rows()
    previous = read_record(work)
    indexed = store.videos() if previous and store.exists() else []
    unchanged = all(
        v["id"] in located and located[v["id"]].size == v["size"] and located[v["id"]].mtime == v["mtime"]
        for v in indexed
    )
    new_ids = sorted(set(located) - {v["id"] for v in indexed})
    total = len(indexed) + len(new_ids)
    dim = features["identity"]["embed_dim"]
    kind = faiss_index.choose_kind(total, dim, config["index"])
    incremental = (
        previous is not None
        and previous["identity"] == identity
        and unchanged
        and previous["kind"] == kind
        and previous["count"] == len(indexed)
    )
    if not incremental:
        shutil.rmtree(folder, ignore_errors=True)
        indexed, new_ids = [], sorted(located)
    folder.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    roots = _source_roots(work)
    columns = read_features(work, [*COLUMNS, "duration"], new_ids, located) if new_ids else None
    if new_ids:
        vectors = video_embeddings(columns, model, device)
        ids = np.arange(len(indexed), len(indexed) + len(new_ids))
        if incremental:
            index = faiss_index.load(folder / "videos.faiss")
            index.add_with_ids(vectors, ids)
        else:
            index = faiss_index.build(vectors, ids, kind, config["index"])
        faiss_index.save(index, folder / "videos.faiss")
        metadata = []
        for i, video_id in enumerate(new_ids):
            ref = located[video_id]
            metadata.append(
                {
                    "id": video_id,
                    "path": _video_path(video_id, roots.get(ref.shard.name)),
                    "duration": float(columns["duration"][i]),
                    "shard": ref.shard.name,
                    "row": ref.row,
                    "size": ref.size,
                    "mtime": ref.mtime,
                }
            )
        store.append({name: columns[name] for name in COLUMNS}, metadata)
    record = {
        "identity": identity,
        "kind": kind,
        "count": total,
        "dim": dim,
        "built": time.time(),
        "added": len(new_ids),
        "incremental": incremental,
        "seconds": time.perf_counter() - started,
        "manifest": manifest,  # the shards this index saw: a query compares it instead of opening them
    }
    write_json_atomically(folder / "record.json", record)
    return record

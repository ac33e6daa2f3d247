"""The workdir: the pipeline's shared ledger, which every stage reads and writes.

    workdir/
      workdir.json     identity of the features (config, weights, hash); fixed at the first extract
      manifest.json    the shards, in the order they were written
      features/        shard-*.h5, each complete (written under a temp name, then renamed)
      failures.jsonl   one line per video that failed: id, stage, reason, file size and mtime
      models/          random-initialised checkpoints saved once (config pretrained = "random")
      locks/           one lock per extraction worker
      text_features.h5 cached CLIP text features of captions (train, eval)
      runs/NAME/       checkpoints, metrics and curves of one training run (train)
      index/           FAISS index, its record and the re-rank store (build-index)
      hashes.json      sha256 of weight files by (path, size, mtime), so each is hashed once
      thumbnails/      frame strips of indexed videos, made once for the search page (serve)

Modules: `ledger` (identity, manifest, locks, failures), `features` (reading rows), `shards` (the
HDF5 format and its readers), `files` (temp file + rename writes, JSON reads that name the file),
`hashing` (weights' sha256, cached).
"""

from .features import RowRef, read_features
from .files import CorruptFile, read_json, write_json_atomically
from .ledger import Workdir, WorkdirError

__all__ = ["CorruptFile", "read_json", "RowRef", "Workdir", "WorkdirError", "read_features", "write_json_atomically"]

"""Opening the current index for search, with every check that it may be searched: built, from the
workdir's features, current, and from the checkpoint asked for. Shared by the torch and the ONNX query
paths, so both refuse the same indexes with the same one-line errors; it imports no torch."""

from __future__ import annotations

from pathlib import Path

from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.shards import read_attrs

from .layout import current_generation, read_record


def checked_generation(work: Workdir, checkpoint: Path | None = None) -> tuple[Path, dict]:
    """(the current generation's folder, its record), or a WorkdirError saying why it cannot be searched."""
    folder = current_generation(work)
    record = read_record(work)
    if folder is None or record is None:
        raise WorkdirError(f"{work.root}: no index; run `gais-pipe build-index` first")
    features = work.identity()
    if features is None or features["feature_hash"] != record["identity"]["feature_hash"]:
        raise WorkdirError(
            f"{work.root}: the index was built from other features than the workdir holds; run `gais-pipe build-index`"
        )
    if not index_current(work, record):
        stale = stale_videos(work, record)
        if stale:
            raise WorkdirError(
                f"{work.root}: the index is stale ({stale} videos extracted or changed since it was built); "
                "run `gais-pipe build-index`"
            )
    indexed_checkpoint = record["identity"]["checkpoint"]
    if checkpoint is not None and (
        indexed_checkpoint is None or work.sha256(checkpoint) != record["identity"]["checkpoint_sha256"]
    ):
        raise WorkdirError(
            f"{checkpoint}: the index was built "
            f"{'zero-shot' if indexed_checkpoint is None else 'from ' + indexed_checkpoint}; "
            f"run `gais-pipe build-index --checkpoint {checkpoint}`"
        )
    return folder, record


def index_current(work: Workdir, record: dict) -> bool:
    """True when the workdir's manifest is the one the index was built from (recorded by build-index):
    then no shard needs opening to know the index is current."""
    return record.get("manifest") is not None and record["manifest"] == work.manifest_digest()


def stale_videos(work: Workdir, record: dict) -> int:
    """Videos extracted or changed since the index was built. Shards are immutable and every
    extraction of a new or changed video writes a new one, so comparing the shard lists is exact and
    costs nothing per video: the count is the videos of the shards added (or, when a shard is gone,
    the index's whole count, since its videos need indexing again)."""
    indexed = set(record.get("shards", []))
    shards = work.shards()
    if indexed - {s.name for s in shards}:
        return int(record["count"])
    return sum(int(read_attrs(s).get("videos", 1)) for s in shards if s.name not in indexed)

"""The feature shard format, and its readers: HDF5 files of fixed-shape arrays, one row a video.

Every stage reads shards; only extract writes them (`gais_pipe.extract.shards`). A shard is written
whole under a temporary name and renamed into place, so a shard that exists is complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# h5py is imported where used: a query process that opens no shard never pays for it.

FORMAT_VERSION = 1
# One column per field of the extractor's FeatureRow, in that order (a test holds them equal).
ROW_FIELDS = [
    "video_id",
    "frame_features",  # [T, D] float16
    "audio_features",  # [T, Da] float16
    "audio_mask",  # [T] bool: the segment has real sound
    "frame_times",  # [T] float32 seconds
    "duration",
    "fps",
    "file_size",
    "file_mtime",
    "has_audio_stream",
    "audio_dropped_packets",
    "decoder",
]
STRING_FIELDS = {"video_id", "decoder"}
INDEX_FIELDS = ("video_id", "file_size", "file_mtime")


def read_index(path: Path) -> dict[str, np.ndarray]:
    """Only the small columns that say which video each row is (for skipping and lookup)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return {
            "video_id": handle["video_id"].asstr()[()],
            "file_size": handle["file_size"][()],
            "file_mtime": handle["file_mtime"][()],
        }


def read_attrs(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as handle:
        return dict(handle.attrs)


def read_rows(
    path: Path, rows: np.ndarray | slice = slice(None), names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Columns of a shard, all rows or the chosen (sorted) ones."""
    import h5py

    with h5py.File(path, "r") as handle:
        out = {}
        for name in names or ROW_FIELDS:
            data = handle[name]
            out[name] = (data.asstr() if name in STRING_FIELDS else data)[rows]
        return out

"""Reading features out of a workdir: where each video's row is, and its columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .shards import read_rows

if TYPE_CHECKING:
    from .ledger import Workdir


@dataclass(frozen=True)
class RowRef:
    shard: Path
    row: int
    size: int
    mtime: float


def read_features(
    work: Workdir,
    names: list[str] | None = None,
    video_ids: list[str] | None = None,
    located: dict[str, RowRef] | None = None,
) -> dict[str, np.ndarray]:
    """Columns for every extracted video (or the ones asked for), in video-id order, newest rows only.
    `located` is `work.rows()` when the caller already has it (it reads every shard's index)."""
    located = work.rows() if located is None else located
    wanted = sorted(located) if video_ids is None else list(video_ids)
    missing = [v for v in wanted if v not in located]
    if missing:
        raise KeyError(f"{work.root}: not extracted: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    by_shard: dict[Path, list[tuple[int, int]]] = {}
    for position, video_id in enumerate(wanted):
        ref = located[video_id]
        by_shard.setdefault(ref.shard, []).append((ref.row, position))
    columns: dict[str, np.ndarray] = {}
    for shard, pairs in by_shard.items():
        pairs.sort()
        rows = np.array([row for row, _ in pairs])
        positions = np.array([position for _, position in pairs])
        for name, values in read_rows(shard, rows, names).items():
            if name not in columns:
                columns[name] = np.empty((len(wanted), *values.shape[1:]), dtype=values.dtype)
            columns[name][positions] = values
    return columns

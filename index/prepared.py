"""The heads' query-independent state of indexed videos, kept across the queries of one process.

`GAISHead.prepare` turns a video's frame and audio features into what pooling needs whatever the query
(keys and output projections of the fused frames, split into their visual and audio parts). With the
ViT-B/32 widths it is 4 multiplications of [T, 512] by [512, 512] per video: for 100 re-ranked
candidates 97 of a search's 105 ms of heads time on one core. It depends only on the video, so a
process that answers many queries (the service, `query --queries`) computes it once per video and
keeps it, least-recently-used first out, within a memory budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields

import numpy as np
import torch

from gais_pipe.retrieval.heads import VideoBatch, VideoState


class PreparedStates:
    def __init__(self, model, budget_bytes: int, max_rows: int):
        self.model = model
        self.budget_bytes = budget_bytes
        self.max_rows = max_rows  # no more slots than the index has videos
        self.capacity = 0  # rows, known once the first state shows a row's size
        self.slots: OrderedDict[int, int] = OrderedDict()  # index row -> slot, least recently used first
        self.store: list[torch.Tensor | None] = []  # per VideoState field: [capacity, ...]

    def _allocate(self, state: VideoState) -> None:
        values = [getattr(state, f.name) for f in fields(VideoState)]
        row_bytes = sum(v[0].numel() * v.element_size() for v in values if v is not None)
        self.capacity = min(self.max_rows, self.budget_bytes // max(row_bytes, 1))
        self.store = [
            None if v is None else torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
            for v in values
        ]

    def get(self, rows: np.ndarray, batch_of: Callable[[list[int]], VideoBatch]) -> VideoState:
        """The state of the index rows `rows`, in that order; `batch_of(rows)` reads the features of the
        rows not kept yet."""
        rows = [int(r) for r in rows]
        missing = [r for r in rows if r not in self.slots]
        fresh = self.model.prepare(batch_of(missing)) if missing else None
        if fresh is not None and not self.store:
            self._allocate(fresh)
        if len(rows) > self.capacity:  # more candidates than the budget holds: nothing kept
            return fresh if len(missing) == len(rows) else self.model.prepare(batch_of(rows))
        for row in rows:
            if row in self.slots:
                self.slots.move_to_end(row)  # kept rows of this query are not evicted below
        if fresh is not None:
            values = [getattr(fresh, f.name) for f in fields(VideoState)]
            for i, row in enumerate(missing):
                slot = len(self.slots) if len(self.slots) < self.capacity else self.slots.popitem(last=False)[1]
                self.slots[row] = slot
                for kept, value in zip(self.store, values):
                    if kept is not None:
                        kept[slot] = value[i]
        device = next(kept.device for kept in self.store if kept is not None)
        index = torch.tensor([self.slots[r] for r in rows], device=device)
        return VideoState(*(None if kept is None else kept.index_select(0, index) for kept in self.store))

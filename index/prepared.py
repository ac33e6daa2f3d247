"""The heads' query-independent state of indexed videos, kept across the queries of one process.

`GAISHead.prepare` turns a video's frame and audio features into what pooling needs whatever the query
(keys and output projections of the fused frames, split into their visual and audio parts). With the
ViT-B/32 widths it is 4 multiplications of [T, 512] by [512, 512] per video: for 100 re-ranked
candidates 97 of a search's 105 ms of heads time on one core. It depends only on the video, so a
process that answers many queries (the service, `query --queries`) computes it once per video and
keeps it, least-recently-used first out, within a memory budget.

One cache serves both engines: a state is a list of arrays, one per field (None where the heads have no
such field), whatever computed them: torch tensors of the torch heads (on their device) or numpy arrays of
the ONNX graphs. It keeps them in one preallocated block per field, rows in slots, and gathers a query's
rows with one indexing per field (numpy ones into buffers it keeps: a state it returns is valid until its
next `get`); it imports neither torch nor onnxruntime.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

State = list[Any]  # per field: an array (np.ndarray or torch.Tensor) with one row per video, or None


def _empty(like: Any, rows: int) -> Any:
    """An uninitialised block of `rows` rows shaped and typed like `like`'s rows, of the same kind and device."""
    if isinstance(like, np.ndarray):
        return np.empty((rows, *like.shape[1:]), dtype=like.dtype)
    return like.new_empty((rows, *like.shape[1:]))  # a torch tensor


def _index_for(kept: Any, index: np.ndarray) -> Any:
    """`index` as the kind of array `kept` is: a torch tensor's on its device (a GPU's, with the torch heads)."""
    if isinstance(kept, np.ndarray):
        return index
    import torch  # a torch tensor is kept, so torch is loaded already

    return torch.from_numpy(index).to(kept.device)


class PreparedStates:
    def __init__(self, budget_bytes: int, max_rows: int):
        self.budget_bytes = budget_bytes
        self.max_rows = max_rows  # no more slots than the index has videos
        self.capacity = 0  # rows, known once the first state shows a row's size
        self.slots: OrderedDict[int, int] = OrderedDict()  # index row -> slot, least recently used first
        self.store: State = []  # per field: [capacity, ...], or None
        self.gathered: list[np.ndarray | None] = []  # per numpy field: the buffer a query's rows are gathered into

    def _allocate(self, state: State) -> None:
        row_bytes = sum(int(value[0].nbytes) for value in state if value is not None and len(value))
        self.capacity = min(self.max_rows, self.budget_bytes // max(row_bytes, 1))
        self.store = [None if value is None else _empty(value, self.capacity) for value in state]

    def get(self, rows: Iterable[int], prepare: Callable[[list[int]], State]) -> State:
        """The state of the index rows `rows`, in that order; `prepare(rows)` computes the state of the rows
        not kept yet (in the order asked)."""
        wanted = [int(r) for r in rows]
        missing = [r for r in wanted if r not in self.slots]
        fresh = prepare(missing) if missing else None
        if fresh is not None and not self.store:
            self._allocate(fresh)
        if len(wanted) > self.capacity:  # more candidates than the budget holds: nothing kept
            return fresh if fresh is not None and len(missing) == len(wanted) else prepare(wanted)
        for row in wanted:
            if row in self.slots:
                self.slots.move_to_end(row)  # kept rows of this query are not evicted below
        if fresh is not None:
            slots = []
            for row in missing:
                slot = len(self.slots) if len(self.slots) < self.capacity else self.slots.popitem(last=False)[1]
                self.slots[row] = slot
                slots.append(slot)
            where = np.array(slots, dtype=np.int64)
            for kept, value in zip(self.store, fresh):
                if kept is not None:
                    kept[_index_for(kept, where)] = value
        index = np.array([self.slots[r] for r in wanted], dtype=np.int64)
        return [self._gather(i, index) for i in range(len(self.store))]

    def _gather(self, field: int, index: np.ndarray) -> Any:
        """The rows `index` of a field. numpy rows go into a buffer kept for the purpose (valid until the next
        `get`): fresh arrays of a few MB each query cost their page faults, 5 of a ViT-B/32 search's 6 ms of
        gathering; torch's allocator keeps its memory."""
        kept = self.store[field]
        if kept is None or not isinstance(kept, np.ndarray):
            return None if kept is None else kept.index_select(0, _index_for(kept, index))
        while len(self.gathered) <= field:
            self.gathered.append(None)
        buffer = self.gathered[field]
        if buffer is None or len(buffer) < len(index):
            buffer = self.gathered[field] = np.empty((max(len(index), 1), *kept.shape[1:]), kept.dtype)
        return np.take(kept, index, axis=0, out=buffer[: len(index)])

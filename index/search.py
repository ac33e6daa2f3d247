"""Search a built index: text in, ranked videos out.

The query searches the FAISS index for `rerank_k` candidates, then (with trained heads) the full
GAIS score re-ranks them from their per-frame inputs in the re-rank store. Each answer says which
moment matched best (the frame with the most attention, or the most similar frame zero-shot) and how
much the answer leaned on sound (the mean audio gate over the frames that have sound).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.text_features import TextEncoder, export_text_tower
from gais_pipe.workdir import Workdir

from .hits import Frames, FrameScores, Hit, RowsById, VideoList, hits_as_dicts, ranked_hits
from .opening import checked_generation
from .prepared import PreparedStates
from .rerank import score_rows, video_batch
from .searchable import open_index
from .store import RerankStore

__all__ = ["Frames", "FrameScores", "Hit", "RowsById", "Searcher", "VideoList", "hits_as_dicts"]


class Searcher:
    engine = "torch"

    def __init__(self, workdir: Path, config: dict, checkpoint: Path | None = None):
        self.work = Workdir(workdir)
        self.config = config
        self.device = resolve_device(config["runtime"]["device"])
        folder, record = checked_generation(self.work, checkpoint)
        indexed_checkpoint = record["identity"]["checkpoint"]
        self.store = RerankStore(folder / "store")
        self.store.open_all()  # open now: a later build may remove this generation's folder
        self.videos = VideoList(self.store)
        self.rows_by_id = RowsById(self.store)
        self.model = None
        if indexed_checkpoint is not None:
            self.model, _, _ = load_head(self.work, Path(indexed_checkpoint), self.device)
        self.index = open_index(folder, record, self.store, self.device, config["index"])
        budget = int(config["query"]["state_cache_mb"]) * 2**20
        self.prepared = PreparedStates(self.model, budget, int(self.index.ntotal)) if self.model is not None else None
        self.encoder = TextEncoder(self.work, self.device)
        self.record = record
        try:  # the next query process can then run without torch (index/numpy_search.py)
            export_text_tower(self.work, self.encoder)
        except OSError:  # a read-only workdir: only that speed-up is lost
            pass

    def encode(self, text: str) -> torch.Tensor:
        """[1, D] the CLIP text embedding of a query."""
        if not text.strip():
            raise ValueError("empty query")
        return torch.from_numpy(self.encoder.encode([text])).to(self.device)

    @torch.no_grad()
    def search(self, text: str, k: int, rerank_k: int) -> list[Hit]:
        return [hit for hit, _ in self.search_frames(text, k, rerank_k)]

    @torch.no_grad()
    def search_frames(self, text: str, k: int, rerank_k: int) -> list[tuple[Hit, Frames]]:
        """The k best videos, each with its frames' times, gates and attention."""
        clip_text = self.encode(text)
        query = clip_text if self.model is None else self.model.encode_text(clip_text)
        query = F.normalize(query, dim=-1)
        depth = min(max(k, rerank_k if self.model is not None else k), int(self.index.ntotal))
        if depth <= 0:
            return []
        _, ids = self.index.search(query.cpu().numpy().astype(np.float32), depth)
        order = np.sort(ids[0][ids[0] >= 0])  # memory-mapped rows read in order
        rows = self.store.rows(order)
        state = None
        if self.prepared is not None:
            position = {row: i for i, row in enumerate(order.tolist())}
            state = self.prepared.get(
                order, lambda wanted: video_batch(rows, self.device, [position[r] for r in wanted])
            )
        scores = score_rows(self.model, clip_text, rows, self.device, state)
        return ranked_hits(scores, order, self.videos, k)

    @torch.no_grad()
    def score_video(self, text: str, row: int) -> FrameScores:
        """One indexed video (by row) against a query, frame by frame."""
        return score_rows(self.model, self.encode(text), self.store.rows(np.array([row])), self.device)

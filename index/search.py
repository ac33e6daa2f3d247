"""Search a built index: text in, ranked videos out.

The query searches the FAISS index for `rerank_k` candidates, then (with trained heads) the full
GAIS score re-ranks them from their per-frame inputs in the re-rank store. Each answer says which
moment matched best (the frame with the most attention, or the most similar frame zero-shot) and how
much the answer leaned on sound (the mean audio gate over the frames that have sound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.shards import read_attrs

from .layout import current_generation, read_record
from .prepared import PreparedStates
from .rerank import FrameScores, score_rows, video_batch
from .searchable import open_index
from .store import RerankStore


@dataclass
class Hit:
    rank: int
    score: float
    video: str
    path: str | None
    moment: float  # seconds: the best-matching frame's time
    audio_gate: float | None  # mean gate over frames with sound; None without sound or without heads


@dataclass
class Frames:
    """One hit's sampled frames: their times, the audio gate (None without heads; per frame None where
    there is no sound), the attention the query paid to each, and the best one."""

    times: list[float]
    gates: list[float | None] | None
    attention: list[float]
    attention_label: str
    best: int

    @classmethod
    def of(cls, scores: FrameScores, i: int) -> Frames:
        gates = None
        if scores.gates is not None:
            gates = [float(g) if heard else None for g, heard in zip(scores.gates[i], scores.mask[i])]
        return cls(
            [float(t) for t in scores.times[i]],
            gates,
            [float(a) for a in scores.attention[i]],
            scores.attention_label,
            int(scores.best_frame()[i]),
        )


class VideoList(Sequence):
    """The indexed videos' metadata as a lazy sequence: `videos[row]` is one SQLite lookup and
    `len(videos)` costs nothing, so a 10M-video index is never loaded whole."""

    def __init__(self, store: RerankStore):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self.store.video(r) for r in range(*row.indices(len(self)))]
        row = int(row)
        return self.store.video(row + len(self) if row < 0 else row)


class RowsById(Mapping):
    """Video id -> index row, looked up in the store's SQLite (its id column is indexed) one id at a
    time, so start-up builds no dict of every video. Ids only: a path is not a key."""

    def __init__(self, store: RerankStore):
        self.store = store

    def __getitem__(self, video_id) -> int:
        row = self.store.row_of(video_id) if isinstance(video_id, str) else None
        if row is None:
            raise KeyError(video_id)
        return row

    def __contains__(self, video_id) -> bool:
        return isinstance(video_id, str) and self.store.row_of(video_id) is not None

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self):
        for row in range(len(self.store)):
            yield self.store.video(row)["id"]


class Searcher:
    def __init__(self, workdir: Path, config: dict, checkpoint: Path | None = None):
        self.work = Workdir(workdir)
        self.config = config
        self.device = resolve_device(config["runtime"]["device"])
        folder = current_generation(self.work)
        record = read_record(self.work)
        if folder is None or record is None:
            raise WorkdirError(f"{workdir}: no index; run `gais-pipe build-index` first")
        features = self.work.identity()
        if features is None or features["feature_hash"] != record["identity"]["feature_hash"]:
            raise WorkdirError(
                f"{workdir}: the index was built from other features than the workdir holds; run `gais-pipe "
                "build-index`"
            )
        if not _index_current(self.work, record):
            stale = _stale_videos(self.work, record)
            if stale:
                raise WorkdirError(
                    f"{workdir}: the index is stale ({stale} videos extracted or changed since it was built); "
                    "run `gais-pipe build-index`"
                )
        indexed_checkpoint = record["identity"]["checkpoint"]
        if checkpoint is not None and (
            indexed_checkpoint is None or self.work.sha256(checkpoint) != record["identity"]["checkpoint_sha256"]
        ):
            raise WorkdirError(
                f"{checkpoint}: the index was built "
                f"{'zero-shot' if indexed_checkpoint is None else 'from ' + indexed_checkpoint}; "
                f"run `gais-pipe build-index --checkpoint {checkpoint}`"
            )
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
        ranked = np.argsort(-scores.score, kind="stable")[:k]
        best = scores.best_frame()
        out = []
        for rank, i in enumerate(ranked.tolist()):
            entry = self.videos[int(order[i])]
            moment = float(scores.times[i][best[i]])
            hit = Hit(rank + 1, float(scores.score[i]), entry["id"], entry["path"], moment, scores.mean_gate(i))
            out.append((hit, Frames.of(scores, i)))
        return out

    @torch.no_grad()
    def score_video(self, text: str, row: int) -> FrameScores:
        """One indexed video (by row) against a query, frame by frame."""
        return score_rows(self.model, self.encode(text), self.store.rows(np.array([row])), self.device)


def _index_current(work: Workdir, record: dict) -> bool:
    """True when the workdir's manifest is the one the index was built from (recorded by build-index):
    then no shard needs opening to know the index is current."""
    return record.get("manifest") is not None and record["manifest"] == work.manifest_digest()


def _stale_videos(work: Workdir, record: dict) -> int:
    """Videos extracted or changed since the index was built. Shards are immutable and every
    extraction of a new or changed video writes a new one, so comparing the shard lists is exact and
    costs nothing per video: the count is the videos of the shards added (or, when a shard is gone,
    the index's whole count, since its videos need indexing again)."""
    indexed = set(record.get("shards", []))
    shards = work.shards()
    if indexed - {s.name for s in shards}:
        return int(record["count"])
    return sum(int(read_attrs(s).get("videos", 1)) for s in shards if s.name not in indexed)


def hits_as_dicts(hits: list[Hit]) -> list[dict]:
    return [asdict(h) for h in hits]

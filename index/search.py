"""Search a built index: text in, ranked videos out.

The query searches the FAISS index for `rerank_k` candidates, then (with trained heads) the full
GAIS score re-ranks them from their per-frame inputs in the re-rank store. Each answer says which
moment matched best (the frame with the most attention, or the most similar frame zero-shot) and how
much the answer leaned on sound (the mean audio gate over the frames that have sound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError

from . import faiss_index
from .layout import read_record
from .prepared import PreparedStates
from .rerank import FrameScores, score_rows, video_batch
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


class Searcher:
    def __init__(self, workdir: Path, config: dict, checkpoint: Path | None = None):
        self.work = Workdir(workdir)
        self.config = config
        self.device = resolve_device(config["runtime"]["device"])
        record = read_record(self.work)
        if record is None or not (self.work.index_dir / "videos.faiss").exists():
            raise WorkdirError(f"{workdir}: no index; run `gais-pipe build-index` first")
        features = self.work.identity()
        if features is None or features["feature_hash"] != record["identity"]["feature_hash"]:
            raise WorkdirError(
                f"{workdir}: the index was built from other features than the workdir holds; run `gais-pipe "
                "build-index`"
            )
        self.store = RerankStore(self.work.index_dir / "store")
        self._refuse_stale(record)
        indexed_checkpoint = record["identity"]["checkpoint"]
        if checkpoint is not None and (
            indexed_checkpoint is None or self.work.sha256(checkpoint) != record["identity"]["checkpoint_sha256"]
        ):
            raise WorkdirError(
                f"{checkpoint}: the index was built "
                f"{'zero-shot' if indexed_checkpoint is None else 'from ' + indexed_checkpoint}; "
                f"run `gais-pipe build-index --checkpoint {checkpoint}`"
            )
        self.model = None
        if indexed_checkpoint is not None:
            self.model, _, _ = load_head(self.work, Path(indexed_checkpoint), self.device)
        index = faiss_index.load_mapped(self.work.index_dir / "videos.faiss")
        self.index = faiss_index.to_device(index, config["index"])
        budget = int(config["query"]["state_cache_mb"]) * 2**20
        self.prepared = PreparedStates(self.model, budget, int(self.index.ntotal)) if self.model is not None else None
        self.encoder = TextEncoder(self.work, self.device)
        self.record = record

    def _refuse_stale(self, record: dict) -> None:
        """Refuse an index that misses videos extracted, or changed, since it was built. The shard list
        the build saw is in the record: while the manifest is the same no shard needs opening."""
        if record.get("manifest") is not None and record["manifest"] == self.work.manifest_digest():
            return
        located = self.work.rows()
        stale = len(set(located) - {v["id"] for v in self.videos}) + sum(
            1
            for v in self.videos
            if v["id"] in located and (located[v["id"]].size, located[v["id"]].mtime) != (v["size"], v["mtime"])
        )
        if stale:
            raise WorkdirError(
                f"{self.work.root}: the index is stale ({stale} videos extracted or changed since it was built); "
                "run `gais-pipe build-index`"
            )

    @cached_property
    def videos(self) -> list[dict]:
        """The indexed videos' metadata, by index row (read when first needed)."""
        return self.store.videos()

    @cached_property
    def rows_by_id(self) -> dict[str, int]:
        return {entry["id"]: row for row, entry in enumerate(self.videos)}

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


def hits_as_dicts(hits: list[Hit]) -> list[dict]:
    return [asdict(h) for h in hits]

"""Search a built index: text in, ranked videos out.

The query searches the FAISS index for `rerank_k` candidates, then (with trained heads) the full
GAIS score re-ranks them from their per-frame inputs in the re-rank store. Each answer says which
moment matched best (the frame with the most attention, or the most similar frame zero-shot) and how
much the answer leaned on sound (the mean audio gate over the frames that have sound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.heads import VideoBatch
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.hashing import sha256_file
from gais_pipe.workdir.shards import read_attrs

from .embeddings import video_embeddings
from .layout import current_generation, read_record
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
        stale = _stale_videos(self.work, record)
        if stale:
            raise WorkdirError(
                f"{workdir}: the index is stale ({stale} videos extracted or changed since it was built); run "
                "`gais-pipe build-index`"
            )
        indexed_checkpoint = record["identity"]["checkpoint"]
        if checkpoint is not None and (
            indexed_checkpoint is None or sha256_file(checkpoint) != record["identity"]["checkpoint_sha256"]
        ):
            raise WorkdirError(
                f"{checkpoint}: the index was built "
                f"{'zero-shot' if indexed_checkpoint is None else 'from ' + indexed_checkpoint}; "
                f"run `gais-pipe build-index --checkpoint {checkpoint}`"
            )
        self.store = RerankStore(folder / "store")
        self.store.open_all()  # open now: a later build may remove this generation's folder
        self.videos = VideoList(self.store)
        self.model = None
        if indexed_checkpoint is not None:
            self.model, _, _ = load_head(self.work, Path(indexed_checkpoint), self.device)
        self.index = open_index(folder, record, self.store, self.device, config["index"])
        self.encoder = TextEncoder(self.work, self.device)
        self.record = record

    @torch.no_grad()
    def search(self, text: str, k: int, rerank_k: int) -> list[Hit]:
        if not text.strip():
            raise ValueError("empty query")
        clip_text = torch.from_numpy(self.encoder.encode([text])).to(self.device)
        query = clip_text if self.model is None else self.model.encode_text(clip_text)
        query = F.normalize(query, dim=-1)
        depth = min(max(k, rerank_k if self.model is not None else k), len(self.videos))
        scores, ids = self.index.search(query.cpu().numpy().astype(np.float32), depth)
        ids = ids[0][ids[0] >= 0]
        order = np.sort(ids)  # memory-mapped rows read in order
        rows = self.store.rows(order)
        frames = torch.from_numpy(rows["frame_features"]).to(self.device).float()
        if self.model is None:  # zero-shot: the index score is the answer
            frame_cos = torch.einsum("d,mtd->mt", query[0], F.normalize(frames, dim=-1))
            embeddings = torch.from_numpy(video_embeddings(rows, None, self.device)).to(self.device)
            final = dict(zip(order.tolist(), (embeddings @ query[0]).tolist()))
            moments = dict(zip(order.tolist(), frame_cos.argmax(dim=1).tolist()))
            gates = {}
        else:
            batch = VideoBatch(
                frames, torch.from_numpy(rows["audio_features"]), torch.from_numpy(rows["audio_mask"])
            ).to(self.device)
            out = self.model(clip_text, batch, with_stage1=False)
            final = dict(zip(order.tolist(), out.full[0].tolist()))
            moments = dict(zip(order.tolist(), out.pooled.attention[0].argmax(dim=1).tolist()))
            mask = batch.mask.float()
            mean_gate = (out.pooled.gates[0] * mask).sum(1) / mask.sum(1).clamp_min(1)
            gates = {
                row: (float(g) if m > 0 else None)
                for row, g, m in zip(order.tolist(), mean_gate.tolist(), mask.sum(1).tolist())
            }
        times = {row: rows["frame_times"][i] for i, row in enumerate(order.tolist())}
        ranked = sorted(final, key=lambda row: -final[row])[:k]
        entries = [self.videos[row] for row in ranked]
        return [
            Hit(
                rank + 1,
                float(final[row]),
                entry["id"],
                entry["path"],
                float(times[row][moments[row]]),
                gates.get(row),
            )
            for rank, (row, entry) in enumerate(zip(ranked, entries))
        ]


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

"""What a search answers, kept free of torch so that the ONNX engine and the torch one share it:
the ranked hits, each hit's frames (times, gates, attention), the per-frame scores both paths compute,
and the indexed videos' metadata as lazy, SQLite-backed views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

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
class FrameScores:
    """For M candidate videos of one query: the score, and per sampled frame what explains it."""

    score: np.ndarray  # [M]
    attention: np.ndarray  # [M, T] the query's attention (trained) or cos(query, frame) (zero-shot)
    gates: np.ndarray | None  # [M, T] audio gate; None zero-shot
    mask: np.ndarray  # [M, T] bool: the segment has sound
    times: np.ndarray  # [M, T] seconds
    attention_label: str

    def best_frame(self) -> np.ndarray:
        """[M] the frame each video matched best: the most attention, or the most similar frame."""
        return self.attention.argmax(axis=1)

    def mean_gate(self, i: int) -> float | None:
        """How much video i's answer leaned on sound: the mean gate over its frames with sound."""
        if self.gates is None or not self.mask[i].any():
            return None
        return float(self.gates[i][self.mask[i]].mean())


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


def ranked_hits(scores: FrameScores, order: np.ndarray, videos: Sequence, k: int) -> list[tuple[Hit, Frames]]:
    """The k best of the candidates (index rows `order`, scored in `scores`), best first."""
    ranked = np.argsort(-scores.score, kind="stable")[:k]
    best = scores.best_frame()
    out = []
    for rank, i in enumerate(ranked.tolist()):
        entry = videos[int(order[i])]
        moment = float(scores.times[i][best[i]])
        hit = Hit(rank + 1, float(scores.score[i]), entry["id"], entry["path"], moment, scores.mean_gate(i))
        out.append((hit, Frames.of(scores, i)))
    return out


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


def hits_as_dicts(hits: list[Hit]) -> list[dict]:
    return [asdict(h) for h in hits]

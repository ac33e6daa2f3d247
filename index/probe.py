"""Probing an IVF index with text queries: the modality gap, and tuning the probe by measurement.

Text queries sit apart from the video vectors they should find (CLIP's modality gap; METHOD.md
section 6): their nearest centroids are not the lists that hold their nearest videos. `ShiftedProbe`
chooses the lists for the query moved by the gap, q - gap (gap = mean text query - mean video, both in
the index's space, estimated at build time from the captions the workdir has encoded), and ranks
inside those lists with the real query (faiss `search_preassigned`, the coarse terms of residual codes
computed with the real query too): the shift only says where to look, never how well a video matches.

`tune` measures, on held-out caption queries against exact search, the cheapest nprobe and re-scoring
depth that reach the recall target, so that `auto` rests on a measurement on this collection's own
queries; build-index records and prints the figures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .faiss_index import require_faiss

CHUNK = 64  # queries whose probed centroids are gathered at once ([64, nprobe, D] float32)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def estimate_gap(text_queries: np.ndarray, video_mean: np.ndarray) -> np.ndarray:
    """[D] mean unit text query minus mean video vector: the offset text queries share."""
    return (unit(text_queries).mean(axis=0) - np.asarray(video_mean, np.float32)).astype(np.float32)


def gap_record(gap: np.ndarray, captions: int, source: str) -> dict:
    """What the index record keeps of the gap: the vector itself (D floats) and where it came from."""
    return {"vector": [float(v) for v in gap], "norm": float(np.linalg.norm(gap)), "captions": captions, "from": source}


class ShiftedProbe:
    """An IVF index searched with lists chosen for q - scale x gap and candidates scored with q itself."""

    def __init__(self, index, gap: np.ndarray, scale: float = 1.0, ef_search: int = 0):
        fa = require_faiss()
        self.index = index
        self.quantizer = fa.downcast_index(index.quantizer)
        self.shift = (float(scale) * np.asarray(gap, np.float32)).reshape(1, -1)
        if self.shift.shape[1] != index.d:
            raise ValueError(f"modality gap of width {self.shift.shape[1]} for an index of width {index.d}")
        self.centroids = self.quantizer.reconstruct_n(0, index.nlist)  # [nlist, D]: the real query's coarse terms
        graph = getattr(self.quantizer, "hnsw", None)
        self.ef_search = int(ef_search) or (int(graph.efSearch) if graph is not None else 0)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = int(value)

    def lists(self, queries: np.ndarray) -> np.ndarray:
        """[Q, nprobe] the lists to scan: the nearest centroids of the shifted queries."""
        nprobe = min(self.nprobe, int(self.index.nlist))
        shifted = np.ascontiguousarray(queries - self.shift, np.float32)
        if hasattr(self.quantizer, "hnsw"):  # the graph walk as wide as the plain search's, never below nprobe
            params = require_faiss().SearchParametersHNSW(efSearch=max(self.ef_search, nprobe))
            return self.quantizer.search(shifted, nprobe, params=params)[1]
        return self.quantizer.search(shifted, nprobe)[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32)
        self.nprobe = min(self.nprobe, int(self.index.nlist))  # search_preassigned wants exactly nprobe lists a query
        scores, ids = [], []
        for start in range(0, len(queries), CHUNK):
            part = queries[start : start + CHUNK]
            assign = self.lists(part)
            coarse = np.einsum("qd,qpd->qp", part, self.centroids[np.maximum(assign, 0)])
            coarse[assign < 0] = -np.inf
            s, i = self.index.search_preassigned(part, k, assign, np.ascontiguousarray(coarse, np.float32))
            scores.append(s)
            ids.append(i)
        return np.concatenate(scores), np.concatenate(ids)


@dataclass(frozen=True)
class Tuned:
    """Figures measured at build time on held-out caption queries (k = 10, one query at a time)."""

    nprobe: int
    refine_factor: int
    gap_scale: float  # lists chosen for q - gap_scale x gap (0: the query itself)
    recall: float  # recall@10 against exact search at these settings
    p50_ms: float
    target: float
    reached: bool
    queries: int
    recall_unshifted: float  # the same nprobe and depth, lists chosen with the query itself

    def as_record(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for build-index's output."""
        verdict = "reaches" if self.reached else "MISSES"
        return (
            f"tuned on {self.queries} held-out captions: nprobe {self.nprobe}, re-score {self.refine_factor} x k, "
            f"gap shift x {self.gap_scale:g}: recall@10 {self.recall:.3f} (lists of the unshifted query: "
            f"{self.recall_unshifted:.3f}) {verdict} {self.target}, p50 {self.p50_ms:.2f} ms"
        )


def exact_top(blocks, queries: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] exact top-k rows over (first row, block) blocks streamed once."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for first, block in blocks:
        scores = queries @ np.asarray(block, np.float32).T
        ids = np.broadcast_to(np.arange(first, first + len(block)), scores.shape)
        merged_s, merged_i = np.concatenate([best_s, scores], 1), np.concatenate([best_i, ids], 1)
        top = np.argpartition(-merged_s, min(k, merged_s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(merged_s, top, 1), np.take_along_axis(merged_i, top, 1)
    return best_i


def measure(index, queries: np.ndarray, truth: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(recall@k against `truth`, p50 ms), one query at a time after a warm-up."""
    index.search(queries[:2], k)
    times, hits = [], 0
    for query, wanted in zip(queries, truth):
        started = time.perf_counter()
        _, ids = index.search(query[None], k)
        times.append((time.perf_counter() - started) * 1000)
        hits += len(set(ids[0].tolist()) & set(wanted[:k].tolist()))
    return hits / (k * len(queries)), float(np.median(times))


def tune(make, index, gap: np.ndarray, queries: np.ndarray, truth: np.ndarray, cfg: dict) -> Tuned:
    """The cheapest (gap scale, refine, nprobe) reaching `tune_recall`: for each gap scale and refine
    factor the smallest nprobe of the ladder that reaches it, then the fastest of those; none reaching
    it, the most exact seen. `make(probe, refine)` gives the searchable index. Whether the shift helps
    depends on the data (on the benchmark's text-like queries a full shift hurts, half of it helps a
    little), so it is measured, not assumed."""
    target = float(cfg.get("tune_recall", 0.95))
    ladder = [p for p in _ladder(cfg, "tune_nprobe", [8, 16, 32, 64, 128, 256, 512, 1024]) if p <= index.nlist]
    scales = [float(v) for v in cfg.get("tune_gap_scale", [0.0, 0.5, 1.0])] if cfg.get("gap_probe", True) else [0.0]
    seen: list[tuple[float, float, int, int, float]] = []  # (recall, p50, nprobe, refine, scale)
    for scale in scales:
        shifted = ShiftedProbe(index, gap, scale, int(cfg.get("coarse_ef_search", 0)))
        for refine in _ladder(cfg, "tune_refine", [4, 8, 16]):
            for nprobe in ladder or [int(index.nlist)]:
                shifted.nprobe = nprobe
                recall, p50 = measure(make(shifted, refine), queries, truth)
                seen.append((recall, p50, nprobe, refine, scale))
                if recall >= target:
                    break
    reaching = [s for s in seen if s[0] >= target]
    recall, p50, nprobe, refine, scale = _cheapest(reaching) if reaching else max(seen)
    plain = ShiftedProbe(index, gap, 0.0, int(cfg.get("coarse_ef_search", 0)))
    plain.nprobe = nprobe
    unshifted = recall if scale == 0 else measure(make(plain, refine), queries, truth)[0]
    index.nprobe = nprobe  # left as tuned: the saved index searches so
    return Tuned(nprobe, refine, scale, recall, p50, target, bool(reaching), len(queries), unshifted)


def _cheapest(reaching: list[tuple[float, float, int, int, float]]) -> tuple[float, float, int, int, float]:
    """Of the settings within 10% of the fastest (timing noise, more so on a loaded machine), the most
    exact (to 0.01: a 200-query estimate is no finer), then no shift, fewer lists, less re-scoring."""
    fastest = min(s[1] for s in reaching)
    close = [s for s in reaching if s[1] <= 1.1 * fastest]
    return min(close, key=lambda s: (-round(s[0], 2), s[4] != 0, s[2], s[3], s[1]))


def _ladder(cfg: dict, key: str, default: list[int]) -> list[int]:
    return sorted({int(v) for v in cfg.get(key, default)})

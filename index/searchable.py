"""A built index made searchable: exact search over the store's embeddings, or a faiss index whose
candidates are re-scored exactly. Either way `search(queries, k)` answers (scores, store rows), best
first, as a faiss index does."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import faiss_index
from .gpu import check_k, gpu_status, placement, to_device
from .store import RerankStore


class ExactIndex:
    """Exact inner product with torch over every embedding, held on the runtime device: fp16 on a GPU
    (1M x 512 = 1 GB; no faiss-gpu needed and no top-k cap), fp32 on the CPU."""

    def __init__(self, store: RerankStore, device: torch.device):
        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.ntotal = len(store)
        self.vectors = None
        for first, block in store.iter_embeddings():
            if self.vectors is None:
                self.vectors = torch.empty((self.ntotal, block.shape[1]), dtype=self.dtype, device=device)
            self.vectors[first : first + len(block)] = torch.from_numpy(block).to(device, self.dtype)

    @torch.no_grad()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.ntotal)
        scores_out, ids_out = [], []
        step = max(1, 2**26 // max(self.ntotal, 1))  # at most 64M scores (256 MB) at a time
        for start in range(0, len(queries), step):
            query = torch.from_numpy(np.asarray(queries[start : start + step], np.float32)).to(self.device, self.dtype)
            scores, ids = (query @ self.vectors.T).float().topk(k, dim=1)
            scores_out.append(scores.cpu().numpy())
            ids_out.append(ids.cpu().numpy().astype(np.int64))
        return np.concatenate(scores_out), np.concatenate(ids_out)


class VideoIndex:
    """An index over store rows. With `rescore`, `factor` x k candidates of the inner index are
    re-scored exactly (rows -> float32 vectors) and the best k kept; `max_k` is the inner index's
    own limit (faiss on a GPU: 2048)."""

    def __init__(
        self,
        inner,
        rescore: Callable[[np.ndarray], np.ndarray] | None = None,
        factor: int = 1,
        max_k: int | None = None,
        where: str = "CPU",
    ):
        self.inner, self.rescore, self.factor, self.max_k, self.where = inner, rescore, factor, max_k, where

    @property
    def ntotal(self) -> int:
        return int(self.inner.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_k(k, self.max_k is not None)
        depth = min(self.ntotal, max(k, k * self.factor) if self.rescore else k)
        if self.max_k is not None:
            depth = min(depth, self.max_k)
        scores, ids = self.inner.search(queries, depth)
        if self.rescore is None:
            return scores[:, :k], ids[:, :k]
        out_scores = np.full((len(queries), min(k, depth)), -np.inf, np.float32)
        out_ids = np.full(out_scores.shape, -1, np.int64)
        for i, query in enumerate(queries):
            found = ids[i][ids[i] >= 0]
            exact = self.rescore(found) @ query
            best = np.argsort(-exact, kind="stable")[: out_ids.shape[1]]
            out_scores[i, : len(best)], out_ids[i, : len(best)] = exact[best], found[best]
        return out_scores, out_ids


def open_index(folder: Path, record: dict, store: RerankStore, device: torch.device, cfg: dict) -> VideoIndex:
    """The generation's index, placed on the runtime device where its kind allows; a GPU asked for and
    not used is said on stderr with the reason."""
    kind = record["kind"]
    if kind == "flat":
        return VideoIndex(ExactIndex(store, device), where=f"exact, {device}")
    cpu_index = faiss_index.load_mapped(folder / "videos.faiss")  # memory-mapped where FAISS can
    if hasattr(cpu_index, "nprobe"):
        cpu_index.nprobe = int(cfg["ivf_nprobe"])
    if kind == "hnsw":
        cpu_index.hnsw.efSearch = int(cfg["hnsw_ef_search"])
    place = placement(kind, int(record.get("code_bytes", 0)), device, bool(cfg.get("use_gpu", True)), gpu_status())
    index, place = to_device(cpu_index, place)
    if place.fallback:
        print(f"index: {place.note}", file=sys.stderr)
    refine = int(cfg["refine_factor"]) if kind in faiss_index.REFINED else 0
    return VideoIndex(
        index,
        rescore=store.embeddings if refine else None,
        factor=max(refine, 1),
        max_k=None if place.gpu is None else 2048,
        where=place.note,
    )

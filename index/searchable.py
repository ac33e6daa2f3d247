"""A built index made searchable: exact search over the store's embeddings, or a faiss index whose
candidates are re-scored exactly. Either way `search(queries, k)` answers (scores, store rows), best
first, as a faiss index does. `open_cpu_index` opens it without torch (exact search in numpy), for the
ONNX query engine; torch is imported only by the torch exact index."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import faiss_index
from .gpu import check_k, gpu_status, placement, to_device
from .probe import ShiftedProbe
from .store import RerankStore

if TYPE_CHECKING:
    import torch


class ExactIndex:
    """Exact inner product with torch over every embedding, held on the runtime device: fp16 on a GPU
    (1M x 512 = 1 GB; no faiss-gpu needed and no top-k cap), fp32 on the CPU."""

    def __init__(self, store: RerankStore, device: torch.device):
        import torch

        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.ntotal = len(store)
        vectors: torch.Tensor | None = None
        for first, block in store.iter_embeddings():
            if vectors is None:
                vectors = torch.empty((self.ntotal, block.shape[1]), dtype=self.dtype, device=device)
            vectors[first : first + len(block)] = torch.from_numpy(block).to(device, self.dtype)
        # an empty store (which the index stage never builds) has no width: 0 x 0
        self.vectors = torch.zeros((0, 0), dtype=self.dtype, device=device) if vectors is None else vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        k = min(k, self.ntotal)
        scores_out, ids_out = [], []
        step = max(1, 2**26 // max(self.ntotal, 1))  # at most 64M scores (256 MB) at a time
        with torch.no_grad():
            for start in range(0, len(queries), step):
                batch = np.asarray(queries[start : start + step], np.float32)
                query = torch.from_numpy(batch).to(self.device, self.dtype)
                scores, ids = (query @ self.vectors.T).float().topk(k, dim=1)
                scores_out.append(scores.cpu().numpy())
                ids_out.append(ids.cpu().numpy().astype(np.int64))
        return np.concatenate(scores_out), np.concatenate(ids_out)


class NumpyExactIndex:
    """ExactIndex's search in float32 numpy on the CPU, for the query path that imports no torch."""

    def __init__(self, store: RerankStore):
        self.ntotal = len(store)
        blocks = [block for _, block in store.iter_embeddings()]
        self.vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.ntotal)
        scores = np.asarray(queries, np.float32) @ self.vectors.T  # [Q, N]
        if k < self.ntotal:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(k), (len(scores), 1))
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, 1), np.take_along_axis(top, order, 1).astype(np.int64)


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
    cpu_index = _load_faiss(folder, record, cfg)
    place = placement(kind, int(record.get("code_bytes", 0)), device, bool(cfg.get("use_gpu", True)), gpu_status())
    index, place = to_device(cpu_index, place)
    if place.fallback:
        print(f"index: {place.note}", file=sys.stderr)
    return _refined(index, record, store, cfg, None if place.gpu is None else 2048, place.note)


def open_cpu_index(folder: Path, record: dict, store: RerankStore, cfg: dict) -> VideoIndex:
    """The generation's index on the CPU, without torch: what `open_index` gives for a CPU runtime device."""
    if record["kind"] == "flat":
        return VideoIndex(NumpyExactIndex(store), where="exact, numpy")
    return _refined(_load_faiss(folder, record, cfg), record, store, cfg, None, "CPU")


def _load_faiss(folder: Path, record: dict, cfg: dict):
    cpu_index = faiss_index.load_mapped(folder / "videos.faiss")  # memory-mapped where FAISS can
    if hasattr(cpu_index, "nprobe"):
        faiss_index.set_probe(cpu_index, probe_settings(record, cfg)[0], cfg)
    if record["kind"] == "hnsw":
        cpu_index.hnsw.efSearch = int(cfg["hnsw_ef_search"])
    return cpu_index


def probe_settings(record: dict, cfg: dict) -> tuple[int, int]:
    """(nprobe, refine factor): those build-index tuned on held-out captions (record "tuned") unless
    `use_tuned` is off, else the configured ones for the kind (the large kind has its own)."""
    tuned = record.get("tuned") if cfg.get("use_tuned", True) else None
    if tuned:
        return int(tuned["nprobe"]), int(tuned["refine_factor"])
    if record["kind"] in faiss_index.LARGE_KINDS:
        return int(cfg["large_nprobe"]), int(cfg["large_refine_factor"])
    return int(cfg["ivf_nprobe"]), int(cfg["refine_factor"])


def shifted(index, record: dict, cfg: dict):
    """The CPU IVF index choosing its lists with the modality-gap shift the record holds (probe.py), when
    `gap_probe` is on; else the index as it is."""
    gap = record.get("gap")
    fa = faiss_index.faiss
    if not gap or not cfg.get("gap_probe", True) or fa is None or not isinstance(index, fa.IndexIVF):
        return index
    tuned = record.get("tuned") if cfg.get("use_tuned", True) else None
    scale = float(tuned["gap_scale"]) if tuned else float(cfg.get("gap_scale", 0.0))
    ef = int(cfg.get("coarse_ef_search", 0))
    return ShiftedProbe(index, np.asarray(gap["vector"], np.float32), scale, ef) if scale else index


def _refined(index, record: dict, store: RerankStore, cfg: dict, max_k: int | None, where: str) -> VideoIndex:
    """Approximate kinds re-score `refine_factor` x k candidates exactly from the store's vectors."""
    refine = probe_settings(record, cfg)[1] if record["kind"] in faiss_index.REFINED else 0
    index = shifted(index, record, cfg)
    if isinstance(index, ShiftedProbe):
        where += ", lists chosen across the modality gap"
    return VideoIndex(
        index, rescore=store.embeddings if refine else None, factor=max(refine, 1), max_k=max_k, where=where
    )

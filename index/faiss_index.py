"""FAISS indexes of L2-normalised video embeddings, searched by inner product (= cosine).

Exact search below a size threshold; above it HNSW when the vectors fit a memory budget, IVF-PQ
when they do not. Every index is wrapped in an IndexIDMap2 so that ids stay the store's row numbers
across incremental adds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError:  # pragma: no cover - a clear error at use
    faiss = None

KINDS = ("flat", "hnsw", "ivf-flat", "ivf-pq")


def require_faiss():
    if faiss is None:
        raise RuntimeError("faiss is not installed: pip install 'gais-pipe[cpu]' (or [gpu] on a GPU machine)")
    return faiss


def choose_kind(count: int, dim: int, cfg: dict) -> str:
    """The index for `count` vectors: the configured type, or by size and memory budget."""
    kind = cfg.get("type", "auto")
    if kind != "auto":
        if kind not in KINDS:
            raise ValueError(f"unknown index type {kind!r} ({', '.join(KINDS)}, auto)")
        return kind
    if count <= int(cfg["exact_max"]):
        return "flat"
    hnsw_bytes = count * (dim * 4 + int(cfg["hnsw_m"]) * 2 * 4)
    return "hnsw" if hnsw_bytes <= int(cfg["memory_mb"]) * 2**20 else "ivf-pq"


def pq_code_bytes(count: int, dim: int, cfg: dict) -> int:
    """PQ code size: as configured, or (0) the largest that keeps the codes within the memory budget.
    Recall grows with the code: on clustered 512-d vectors, recall@10 was 0.41 / 0.64 / 0.85 at 64 /
    128 / 256 bytes (benchmarks/index_bench.py)."""
    wanted = int(cfg.get("pq_bytes", 0))
    if not wanted:
        budget = int(cfg["memory_mb"]) * 2**20
        wanted = next((b for b in (256, 128, 64, 32, 16, 8) if count * (b + 8) <= budget), 8)
    wanted = min(wanted, dim)
    while dim % wanted:  # PQ splits the vector into equal sub-vectors
        wanted -= 1
    return wanted


def build(vectors: np.ndarray, ids: np.ndarray, kind: str, cfg: dict):
    """A trained, filled index (on the CPU; `to_device` moves it to a GPU for search)."""
    fa = require_faiss()
    count, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        inner = fa.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = fa.IndexHNSWFlat(dim, int(cfg["hnsw_m"]), fa.METRIC_INNER_PRODUCT)
        inner.hnsw.efSearch = int(cfg["hnsw_ef_search"])
    else:
        lists = max(1, min(int(math.sqrt(count)), count // 39))  # FAISS wants >= 39 points per list
        quantizer = fa.IndexFlatIP(dim)
        if kind == "ivf-flat":
            inner = fa.IndexIVFFlat(quantizer, dim, lists, fa.METRIC_INNER_PRODUCT)
        else:
            code = pq_code_bytes(count, dim, cfg)
            inner = fa.IndexIVFPQ(quantizer, dim, lists, code, 8, fa.METRIC_INNER_PRODUCT)
        # k-means on a sample: 64 points per list is plenty, and keeps a 1M build in seconds
        sample = np.random.default_rng(0).choice(count, size=min(count, 64 * lists), replace=False)
        if cfg.get("use_gpu", True) and gpu_count():  # train on the GPU, fill and save on the CPU
            trained = fa.index_cpu_to_all_gpus(inner)
            trained.train(vectors[np.sort(sample)])
            inner = fa.index_gpu_to_cpu(trained)
        else:
            inner.train(vectors[np.sort(sample)])
        inner.nprobe = int(cfg["ivf_nprobe"])
    index = fa.IndexIDMap2(inner)
    index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return index


def gpu_count() -> int:
    return faiss.get_num_gpus() if faiss is not None and hasattr(faiss, "get_num_gpus") else 0


def to_device(index, cfg: dict):
    """Move a flat or IVF index to the GPU when faiss-gpu and a GPU are there (HNSW stays on the CPU)."""
    if not cfg.get("use_gpu", True) or gpu_count() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception:  # HNSW and some wrappers have no GPU version
        return index


def save(index, path: Path) -> None:
    fa = require_faiss()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fa.write_index(index, str(tmp))
    os.replace(tmp, path)


def load(path: Path):
    return require_faiss().read_index(str(path))


def load_mapped(path: Path):
    """The index for searching, memory-mapped where FAISS can (flat codes: a 100k x 512 index opens in
    20 ms instead of 300), read whole where it cannot. The mapping keeps the file it opened even when a
    rebuild renames a new one into place."""
    fa = require_faiss()
    for flag in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
        if hasattr(fa, flag):
            try:
                return fa.read_index(str(path), getattr(fa, flag))
            except RuntimeError:
                continue
    return fa.read_index(str(path))

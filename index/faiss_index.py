"""FAISS indexes of L2-normalised video embeddings, searched by inner product (= cosine): which one a
collection gets, and how it is trained and filled from the store without holding the vectors.

The choice (`auto`), and why:
- up to `exact_max` videos: exact search (`flat`); the store's embeddings are the index.
- a GPU present (faiss-gpu not needed: torch does it): exact search on the GPU while the vectors fit
  `gpu_exact_mb` in fp16 (1M x 512 = 1 GB), so larger collections stay exact.
- above that, IVF with 8-bit scalar codes (`ivf-sq8`, D+8 bytes a video) when they fit `memory_mb`,
  else IVF-PQ with the largest code that fits; both re-score `refine_factor` x k candidates exactly
  from the store's float32 embeddings, so the codes only have to find candidates, not rank them.
- never HNSW: the queries are text embeddings, out of distribution for a graph built on video
  embeddings (METHOD.md section 6: HNSW32 recall@10 0.40 against 1.00 for IVF on text queries).
  `--type hnsw` still builds one.
Indexes are built on the CPU (k-means on the GPU when there is one); `gpu.to_device` moves them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def _import_faiss():
    """faiss, or None and a one-line reason: missing, or broken by two faiss packages installed over
    each other (faiss-cpu and faiss-gpu both own `faiss/`; the mix fails with an AttributeError)."""
    try:
        import faiss

        return faiss, None
    except ImportError as error:
        return None, f"faiss is not installed ({error}): pip install 'gais-pipe[cpu]' (or [gpu] on a GPU machine)"
    except AttributeError as error:
        return None, (
            f"faiss fails to import ({error}): two faiss packages are probably installed over each other; "
            "pip uninstall -y faiss-cpu faiss-gpu faiss-gpu-cu12, then install one extra: 'gais-pipe[cpu]' or [gpu]"
        )


faiss, FAISS_PROBLEM = _import_faiss()
KINDS = ("flat", "ivf-sq8", "ivf-pq", "ivf-flat", "hnsw")
REFINED = ("ivf-sq8", "ivf-pq")  # lossy codes: candidates re-scored exactly from the store


def require_faiss():
    if faiss is None:
        raise RuntimeError(FAISS_PROBLEM)
    return faiss


@dataclass(frozen=True)
class Choice:
    """An index kind with its parameters and the reason it was chosen (printed by build-index)."""

    kind: str
    reason: str
    lists: int = 0
    code_bytes: int = 0

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "reason"}


def ivf_lists(count: int, cfg: dict) -> int:
    """Inverted lists: as configured, or the power of two nearest 4 sqrt(N) (4096 at 1M), with at
    least 39 vectors per list (FAISS's k-means minimum)."""
    wanted = int(cfg.get("ivf_lists", 0)) or 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return max(1, min(wanted, count // 39))


def choose_kind(count: int, dim: int, cfg: dict, gpu_present: bool = False) -> Choice:
    """The index for `count` vectors of width `dim`: the configured type, or `auto` (module doc)."""
    kind = cfg.get("type", "auto")
    budget = int(cfg["memory_mb"]) * 2**20
    lists = ivf_lists(count, cfg)
    if kind != "auto":
        if kind not in KINDS:
            raise ValueError(f"unknown index type {kind!r} ({', '.join(KINDS)}, auto)")
        code = pq_code_bytes(count, dim, cfg, gpu_present) if kind == "ivf-pq" else 0
        return Choice(kind, "asked for (index.type / --type)", lists if kind.startswith("ivf") else 0, code)
    if count <= int(cfg["exact_max"]):
        return Choice("flat", f"{count} videos <= index.exact_max ({cfg['exact_max']}): exact search")
    if gpu_present and cfg.get("use_gpu", True) and count * dim * 2 <= int(cfg["gpu_exact_mb"]) * 2**20:
        return Choice(
            "flat",
            f"a GPU is present and {count} x {dim} fp16 vectors ({count * dim * 2 / 2**20:.0f} MiB) fit "
            f"index.gpu_exact_mb ({cfg['gpu_exact_mb']}): exact search on the GPU",
        )
    not_hnsw = "HNSW not considered: text queries are out of distribution for graph indexes (METHOD.md 6)"
    sq_bytes = count * (dim + 8)
    if sq_bytes <= budget:
        return Choice(
            "ivf-sq8",
            f"8-bit codes of {count} videos ({sq_bytes / 2**20:.0f} MiB) fit --memory-mb {cfg['memory_mb']}; "
            f"IVF{lists}, candidates re-scored exactly; {not_hnsw}",
            lists,
        )
    code = pq_code_bytes(count, dim, cfg, gpu_present)
    return Choice(
        "ivf-pq",
        f"8-bit codes ({sq_bytes / 2**20:.0f} MiB) exceed --memory-mb {cfg['memory_mb']}: IVF{lists},PQ with "
        f"{code}-byte codes ({count * (code + 8) / 2**20:.0f} MiB), candidates re-scored exactly; {not_hnsw}",
        lists,
        code,
    )


# Code sizes GPU IVF-PQ takes; the last three only with float16 lookup tables (shared-memory limits).
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
GPU_PQ_FLOAT16_ONLY = (56, 64, 96)


def pq_code_bytes(count: int, dim: int, cfg: dict, gpu_present: bool = False) -> int:
    """PQ code size: as configured, or (0) the largest that keeps the codes within the memory budget,
    a divisor of the width (PQ splits the vector into equal sub-vectors) and, with a GPU, one that GPU
    IVF-PQ takes (at most 96 bytes: the automatic 256 would leave the search on the CPU)."""
    wanted = int(cfg.get("pq_bytes", 0))
    allowed = [b for b in (GPU_PQ_BYTES if gpu_present else (256, 192, 128, 96, 64, 48, 32, 16, 8)) if b <= dim]
    if not wanted:
        budget = int(cfg["memory_mb"]) * 2**20
        fitting = [b for b in allowed if dim % b == 0 and count * (b + 8) <= budget]
        return max(fitting) if fitting else min(b for b in allowed if dim % b == 0)
    wanted = min(wanted, dim)
    while dim % wanted:
        wanted -= 1
    return wanted


def new_index(choice: Choice, dim: int, cfg: dict):
    """An empty index of the chosen kind (on the CPU)."""
    fa = require_faiss()
    if choice.kind == "hnsw":
        index = fa.IndexHNSWFlat(dim, int(cfg["hnsw_m"]), fa.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(cfg["hnsw_ef_search"])
        return index
    if choice.kind == "flat":
        return fa.IndexFlatIP(dim)
    quantizer = fa.IndexFlatIP(dim)
    if choice.kind == "ivf-flat":
        index = fa.IndexIVFFlat(quantizer, dim, choice.lists, fa.METRIC_INNER_PRODUCT)
    elif choice.kind == "ivf-sq8":
        index = fa.IndexIVFScalarQuantizer(
            quantizer, dim, choice.lists, fa.ScalarQuantizer.QT_8bit, fa.METRIC_INNER_PRODUCT
        )
    else:
        index = fa.IndexIVFPQ(quantizer, dim, choice.lists, choice.code_bytes, 8, fa.METRIC_INNER_PRODUCT)
    index.cp.spherical = True  # unit vectors: centroids on the sphere suit inner-product search
    index.nprobe = int(cfg["ivf_nprobe"])
    return index


def training_rows(count: int, lists: int, cfg: dict, seed: int = 0) -> np.ndarray:
    """Sorted rows of the k-means sample: `train_per_list` points per list (64: enough for stable
    centroids, and a 1M build's k-means takes a minute on 2 cores, not ten)."""
    size = min(count, max(lists * int(cfg["train_per_list"]), 1))
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


def train(index, sample: np.ndarray, gpu_device: int | None = None) -> None:
    """Train on a sample; k-means runs on GPU `gpu_device` when given (the index itself stays on the
    CPU, PQ training too), so exactly one GPU trains, once."""
    fa = require_faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if gpu_device is not None and isinstance(index, fa.IndexIVF):
        resources = fa.StandardGpuResources()
        config = fa.GpuIndexFlatConfig()
        config.device = gpu_device
        clustering = fa.GpuIndexFlatIP(resources, index.d, config)
        index.clustering_index = clustering
        try:
            index.train(sample)
        finally:
            index.clustering_index = None
        return
    index.train(sample)


def add_blocks(index, blocks: Iterable[tuple[int, np.ndarray]], on_block: Callable[[int], None] | None = None) -> None:
    """Add (first id, [n, D]) blocks; ids are store rows, so an IVF index stores them directly."""
    fa = require_faiss()
    for first, block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if isinstance(index, fa.IndexIVF):
            index.add_with_ids(block, np.arange(first, first + len(block), dtype=np.int64))
        else:
            if index.ntotal != first:
                raise RuntimeError(f"index holds {index.ntotal} vectors, the next block starts at row {first}")
            index.add(block)
        if on_block is not None:
            on_block(len(block))


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

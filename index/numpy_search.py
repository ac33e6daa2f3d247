"""`Searcher` without torch: the same search, checks and answers, in numpy.

Importing torch costs ~2 s on a small machine, more than a one-query `gais-pipe query` process should
take in all. On a CPU this searcher answers the same way with numpy (and faiss for approximate
indexes): the text tower exported by build-index (`retrieval/numpy_text.py`), open_clip's tokenizer run
by HF `tokenizers` (`retrieval/bpe_tokenizer.py`), the heads' eval-mode scoring mirrored in
`retrieval/numpy_heads.py`, the videos' prepared state computed from the re-rank store. Where it cannot
(a GPU may be the runtime device, no export of the text tower, heads the mirror does not cover),
`open_numpy_searcher` says why and the caller uses `Searcher`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path

import numpy as np

from gais_pipe.retrieval import numpy_text
from gais_pipe.retrieval.bpe_tokenizer import clip_tokenizer
from gais_pipe.retrieval.numpy_heads import NumpyHeads, NumpyState, load_heads, normalize
from gais_pipe.workdir import Workdir

from .hits import Frames, FrameScores, Hit, VideoList, ranked_hits
from .opening import checked_generation
from .searchable import open_cpu_index
from .store import RerankStore

GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


def torch_free_device(name: str) -> str | None:
    """None when the runtime device is the CPU whatever torch would find; else why torch must decide."""
    if name == "cpu" or (name == "auto" and os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")):
        return None
    if name != "auto":
        return f"runtime.device = {name!r}"
    if any(Path(node).exists() for node in GPU_NODES):
        return "runtime.device = 'auto' on a machine with a GPU driver: torch picks the device"
    return None


def open_numpy_searcher(
    workdir: Path, config: dict, checkpoint: Path | None = None
) -> tuple[NumpySearcher | None, str | None]:
    """(searcher, None), or (None, why the torch searcher is needed). An index that cannot be searched at
    all (none, stale, other features or checkpoint) raises the same WorkdirError as `Searcher`."""
    work = Workdir(workdir)
    folder, record = checked_generation(work, checkpoint)
    reason = torch_free_device(str(config["runtime"]["device"]))
    if reason:
        return None, reason
    clip_sha256 = work.identity()["clip"]["sha256"]
    export = numpy_text.export_path(work.models_dir, clip_sha256)
    meta = numpy_text.read_meta(export)
    if meta is None or meta["clip_sha256"] != clip_sha256:
        return None, f"{export}: no numpy export of the checkpoint's text tower (build-index or a torch query makes it)"
    heads = None
    if record["identity"]["checkpoint"] is not None:
        heads, reason = load_heads(Path(record["identity"]["checkpoint"]), record["identity"]["feature_hash"])
        if heads is None:
            return None, reason
    tower = numpy_text.NumpyTextTower(export, clip_sha256)
    return NumpySearcher(folder, record, config, tower, heads), None


class NumpySearcher:
    engine = "numpy"

    def __init__(self, folder: Path, record: dict, config: dict, tower, heads: NumpyHeads | None):
        self.record = record
        self.store = RerankStore(folder / "store")
        self.store.open_all()  # open now: a later build may remove this generation's folder
        self.videos = VideoList(self.store)
        self.index = open_cpu_index(folder, record, self.store, config["index"])
        self.tower, self.tokenizer = tower, clip_tokenizer(tower.context_length)
        self.heads = heads
        budget = int(config["query"]["state_cache_mb"]) * 2**20
        self.states = KeptStates(heads, budget) if heads is not None else None

    def encode(self, text: str) -> np.ndarray:
        """[1, D] the CLIP text embedding of a query."""
        if not text.strip():
            raise ValueError("empty query")
        return self.tower(self.tokenizer([text]))

    def search(self, text: str, k: int, rerank_k: int) -> list[Hit]:
        return [hit for hit, _ in self.search_frames(text, k, rerank_k)]

    def search_frames(self, text: str, k: int, rerank_k: int) -> list[tuple[Hit, Frames]]:
        """As Searcher.search_frames."""
        clip_text = self.encode(text)
        query = normalize(clip_text) if self.heads is None else self.heads.stage1_query(clip_text)
        depth = min(max(k, rerank_k if self.heads is not None else k), int(self.index.ntotal))
        if depth <= 0:
            return []
        _, ids = self.index.search(query.astype(np.float32), depth)
        order = np.sort(ids[0][ids[0] >= 0])  # memory-mapped rows read in order
        rows = self.store.rows(order)
        state = self.states.get(order, rows) if self.states is not None else None
        return ranked_hits(score_rows(self.heads, clip_text, rows, state), order, self.videos, k)


def score_rows(heads: NumpyHeads | None, clip_text: np.ndarray, rows: dict, state: NumpyState | None) -> FrameScores:
    """rerank.score_rows in numpy: trained heads' full score, gates and attention; zero-shot the index's
    own score (unit mean of unit frames) and each frame's cosine with the query."""
    mask = np.asarray(rows["audio_mask"], dtype=bool)
    times = np.asarray(rows["frame_times"], dtype=np.float32)
    if heads is None:
        query = normalize(clip_text.astype(np.float32))[0]
        frames = normalize(np.asarray(rows["frame_features"], np.float32))
        cosines = np.einsum("d,mtd->mt", query, frames)
        score = normalize(frames.mean(axis=1)) @ query
        return FrameScores(score, cosines, None, mask, times, "cos(query, frame)")
    if state is None:
        state = heads.prepare(rows["frame_features"], rows["audio_features"], mask)
    scores = heads.score(clip_text, state)
    return FrameScores(scores.full[0], scores.attention[0], scores.gates[0], mask, times, "attention")


class KeptStates:
    """The heads' prepared state of videos kept across the queries of one process (as prepared.py for
    the torch heads), least recently used first out, within a byte budget."""

    def __init__(self, heads: NumpyHeads, budget_bytes: int):
        self.heads, self.budget_bytes = heads, budget_bytes
        self.kept: OrderedDict[int, tuple] = OrderedDict()  # index row -> its NumpyState fields
        self.bytes = 0

    def get(self, order: np.ndarray, rows: dict) -> NumpyState:
        """The state of the index rows `order`, whose store columns are `rows` (same order)."""
        order = [int(r) for r in order]
        if not order:
            return self.heads.prepare(rows["frame_features"], rows["audio_features"], rows["audio_mask"])
        missing = [i for i, row in enumerate(order) if row not in self.kept]
        found = {}
        if missing:
            fresh = self.heads.prepare(
                rows["frame_features"][missing], rows["audio_features"][missing], rows["audio_mask"][missing]
            )
            values = [getattr(fresh, f.name) for f in fields(NumpyState)]
            found = {order[i]: tuple(None if v is None else v[j] for v in values) for j, i in enumerate(missing)}
        parts = [found[row] if row in found else self.kept[row] for row in order]
        for row in order:
            if row in self.kept:
                self.kept.move_to_end(row)
        for row, part in found.items():
            self.kept[row] = part
            self.bytes += sum(v.nbytes for v in part if v is not None)
        while self.kept and self.bytes > self.budget_bytes:
            _, dropped = self.kept.popitem(last=False)
            self.bytes -= sum(v.nbytes for v in dropped if v is not None)
        return NumpyState(*(None if column[0] is None else np.stack(column) for column in zip(*parts)))

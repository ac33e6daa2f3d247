"""Search a built index: text in, ranked videos out.

The query searches the FAISS index for `rerank_k` candidates, then (with trained heads) the full
GAIS score re-ranks them from their per-frame inputs in the re-rank store. Each answer says which
moment matched best (the frame with the most attention, or the most similar frame zero-shot) and how
much the answer leaned on sound (the mean audio gate over the frames that have sound).

One `Searcher` does this with either engine, the same checks, candidates, cache and answers:
- "onnx": CLIP's text tower and the heads' scoring as the ONNX graphs `build-index` exported from the torch
  modules (retrieval/exported.py), run by onnxruntime on the CPU. It never imports torch (2 s of a small
  machine's time, more than a whole one-query process takes).
- "torch": the torch modules themselves (index/torch_scorer.py), on the runtime device.
`open_searcher` takes the ONNX engine wherever it can answer and says why when it cannot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gais_pipe.retrieval.exported import NotExported, OnnxHeads, OnnxTextEncoder
from gais_pipe.workdir import Workdir

from .hits import Frames, FrameScores, Hit, RowsById, VideoList, hits_as_dicts, ranked_hits
from .opening import checked_generation
from .prepared import PreparedStates, State
from .rerank import heads_scores, normalize, take, zero_shot_scores
from .searchable import VideoIndex, open_cpu_index, open_index
from .store import RerankStore

if TYPE_CHECKING:
    from .torch_scorer import TorchScorer

__all__ = [
    "ENGINES",
    "Frames",
    "FrameScores",
    "Hit",
    "NotExported",
    "RowsById",
    "Searcher",
    "VideoList",
    "hits_as_dicts",
    "open_searcher",
]

ENGINES = ("auto", "onnx", "torch")
# From this many queries in a process on (and for a service), the text tower's weights are repacked for the
# matrix kernels at load: 0.1-0.2 s more to start, ~9 ms less a query with ViT-B/32 widths (exported.session).
PREPACK_QUERIES = 10
GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


class Scorer(Protocol):
    """What an engine computes for a search (index/torch_scorer.py, `OnnxScorer`)."""

    engine: str

    @property
    def has_heads(self) -> bool: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def query(self, clip_text: np.ndarray) -> np.ndarray: ...

    def prepare(self, rows: dict[str, np.ndarray]) -> State: ...

    def score(self, clip_text: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class OnnxScorer:
    """The ONNX engine: the text tower's and the heads' exports of this workdir's checkpoints, on the CPU.
    NotExported (with the reason) when an export is missing, stale or could not be made."""

    engine = "onnx"

    def __init__(self, work: Workdir, config: dict, record: dict, queries: int | None = None):
        threads = int(config["query"]["torch_threads"])  # the search threads, whichever engine runs them
        features = work.identity() or {}
        # A process that answers a few queries leaves the text tower's weights memory-mapped (exported.session)
        prepack = queries is None or queries >= PREPACK_QUERIES
        self.text = OnnxTextEncoder(work.models_dir, features["clip"]["sha256"], threads, prepack)
        self.heads = None
        if record["identity"]["checkpoint"] is not None:
            self.heads = OnnxHeads(work.models_dir, record["identity"]["checkpoint_sha256"], threads)

    @property
    def has_heads(self) -> bool:
        return self.heads is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.text.encode(texts)

    def query(self, clip_text: np.ndarray) -> np.ndarray:
        return normalize(np.asarray(clip_text, np.float32)) if self.heads is None else self.heads.query(clip_text)

    def prepare(self, rows: dict[str, np.ndarray]) -> State:
        assert self.heads is not None, "no heads: zero-shot scores need no prepared state"
        return list(self.heads.prepare(rows["frame_features"], rows["audio_features"], rows["audio_mask"]))

    def score(self, clip_text: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.heads is not None, "no heads: zero-shot scores are computed without them"
        return self.heads.score(clip_text, state)


def torch_free_device(name: str) -> str | None:
    """None when the runtime device is the CPU whatever torch would find; else why torch must decide."""
    if name == "cpu" or (name == "auto" and os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")):
        return None
    if name != "auto":
        return f"runtime.device = {name!r}: torch runs the search there"
    if any(Path(node).exists() for node in GPU_NODES):
        return "runtime.device = 'auto' on a machine with a GPU driver: torch picks the device"
    return None


def open_searcher(
    workdir: Path, config: dict, checkpoint: Path | None = None, engine: str = "auto", queries: int | None = None
) -> tuple[Searcher, str | None]:
    """(searcher, why the torch engine answers, or None). `auto` takes the ONNX engine where it can answer: the
    runtime device is the CPU and the exports are current; `onnx` and `torch` force one. An index that cannot
    be searched at all (none, stale, other features or checkpoint) raises the same WorkdirError either way.
    `queries`: how many queries this process will answer, when known (None: a service, many)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine == "torch":
        return Searcher(workdir, config, checkpoint, "torch"), "--engine torch"
    why = torch_free_device(str(config["runtime"]["device"])) if engine == "auto" else None
    if why is None:
        try:
            return Searcher(workdir, config, checkpoint, "onnx", queries), None
        except NotExported as error:
            if engine == "onnx":
                raise ValueError(f"--engine onnx: {error}") from None
            why = str(error)
    return Searcher(workdir, config, checkpoint, "torch"), why


class Searcher:
    def __init__(
        self,
        workdir: Path,
        config: dict,
        checkpoint: Path | None = None,
        engine: str = "torch",
        queries: int | None = None,
    ):
        self.work = Workdir(workdir)
        self.config = config
        folder, record = checked_generation(self.work, checkpoint)
        self.record = record
        torch_scorer: TorchScorer | None = None
        if engine == "onnx":
            self.scorer: Scorer = OnnxScorer(self.work, config, record, queries)
        elif engine == "torch":
            from .torch_scorer import TorchScorer

            self.scorer = torch_scorer = TorchScorer(self.work, config, record)
        else:
            raise ValueError(f"engine {engine!r}: onnx or torch")
        self.store = RerankStore(folder / "store")
        self.store.open_all()  # open now: a later build may remove this generation's folder
        self.videos = VideoList(self.store)
        self.rows_by_id = RowsById(self.store)
        self.index: VideoIndex
        if torch_scorer is not None:
            self.index = open_index(folder, record, self.store, torch_scorer.device, config["index"])
        else:
            self.index = open_cpu_index(folder, record, self.store, config["index"])
        budget = int(config["query"]["state_cache_mb"]) * 2**20
        self.prepared = PreparedStates(budget, int(self.index.ntotal)) if self.scorer.has_heads else None

    @property
    def engine(self) -> str:
        return self.scorer.engine

    def encode(self, text: str) -> np.ndarray:
        """[1, D] the CLIP text embedding of a query."""
        if not text.strip():
            raise ValueError("empty query")
        return self.scorer.encode([text])

    def search(self, text: str, k: int, rerank_k: int) -> list[Hit]:
        return [hit for hit, _ in self.search_frames(text, k, rerank_k)]

    def search_frames(self, text: str, k: int, rerank_k: int) -> list[tuple[Hit, Frames]]:
        """The k best videos, each with its frames' times, gates and attention."""
        clip_text = self.encode(text)
        depth = min(max(k, rerank_k if self.scorer.has_heads else k), int(self.index.ntotal))
        if depth <= 0:
            return []
        _, ids = self.index.search(self.scorer.query(clip_text).astype(np.float32), depth)
        order = np.sort(ids[0][ids[0] >= 0])  # memory-mapped rows read in order
        if len(order) == 0:
            return []
        return ranked_hits(self._scores(clip_text, order), order, self.videos, k)

    def search_many(self, texts: list[str], k: int, rerank_k: int) -> list[list[Hit]]:
        """The k best videos of each text, the texts encoded and the index searched in one call each (faiss
        spreads a batch over its threads; the text tower runs once); re-ranking stays per query."""
        if any(not text.strip() for text in texts):
            raise ValueError("empty query")
        depth = min(max(k, rerank_k if self.scorer.has_heads else k), int(self.index.ntotal))
        if not texts or depth <= 0:
            return [[] for _ in texts]
        clip_text = self.scorer.encode(list(texts))
        _, ids = self.index.search(self.scorer.query(clip_text).astype(np.float32), depth)
        answers: list[list] = []
        for i, found in enumerate(ids):
            order = np.sort(found[found >= 0])
            if len(order) == 0:
                answers.append([])
                continue
            ranked = ranked_hits(self._scores(clip_text[i : i + 1], order), order, self.videos, k)
            answers.append([hit for hit, _ in ranked])
        return answers

    def score_video(self, text: str, row: int) -> FrameScores:
        """One indexed video (by row) against a query, frame by frame."""
        return self._scores(self.encode(text), np.array([row]), keep=False)

    def _scores(self, clip_text: np.ndarray, order: np.ndarray, keep: bool = True) -> FrameScores:
        rows = self.store.rows(order)
        if not self.scorer.has_heads:
            return zero_shot_scores(clip_text, rows)
        if self.prepared is None or not keep:
            state = self.scorer.prepare(rows)
        else:
            position = {row: i for i, row in enumerate(order.tolist())}
            state = self.prepared.get(
                order, lambda wanted: self.scorer.prepare(take(rows, [position[r] for r in wanted]))
            )
        return heads_scores(*self.scorer.score(clip_text, state), rows)

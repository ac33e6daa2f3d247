"""The torch engine of a search: CLIP's text tower and the heads as torch modules, on the runtime device.

The reference the ONNX engine is held to (tests/test_onnx_query.py), and what answers where the ONNX engine
cannot: a GPU as the runtime device, an export missing or stale, an architecture or switch not exported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.heads import VideoBatch, VideoState
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir

from .prepared import State


def limit_threads(config: dict) -> None:
    """torch's CPU threads for searches (`query.torch_threads`; 0 leaves torch's default)."""
    threads = int(config["query"]["torch_threads"])
    if threads > 0:
        torch.set_num_threads(threads)


def video_batch(rows: dict[str, np.ndarray], device: torch.device) -> VideoBatch:
    """The heads' input for store rows."""
    return VideoBatch(
        torch.from_numpy(np.asarray(rows["frame_features"])),
        torch.from_numpy(np.asarray(rows["audio_features"])),
        torch.from_numpy(np.asarray(rows["audio_mask"], dtype=bool)),
    ).to(device)


class TorchScorer:
    engine = "torch"

    def __init__(self, work: Workdir, config: dict, record: dict):
        self.device = resolve_device(config["runtime"]["device"])
        checkpoint = record["identity"]["checkpoint"]
        self.model = load_head(work, Path(checkpoint), self.device)[0] if checkpoint is not None else None
        self.encoder = TextEncoder(work, self.device)

    @property
    def has_heads(self) -> bool:
        return self.model is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N, D] CLIP text embeddings."""
        return self.encoder.encode(texts)

    @torch.no_grad()
    def query(self, clip_text: np.ndarray) -> np.ndarray:
        """[N, D] the unit query the index is searched with: the heads' stage-1 query, or CLIP's own text."""
        text = torch.from_numpy(np.asarray(clip_text, np.float32)).to(self.device)
        if self.model is not None:
            text = self.model.encode_text(text)
        return F.normalize(text, dim=-1).cpu().numpy()

    @torch.no_grad()
    def prepare(self, rows: dict[str, np.ndarray]) -> State:
        """The heads' query-independent state of store rows, as VideoState's fields (tensors on the device)."""
        assert self.model is not None, "no heads: zero-shot scores need no prepared state"
        return list(vars(self.model.prepare(video_batch(rows, self.device))).values())

    @torch.no_grad()
    def score(self, clip_text: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(full score [N, M], gates [N, M, T], attention [N, M, T]) of N CLIP texts against prepared videos."""
        assert self.model is not None, "no heads: zero-shot scores are computed without them"
        text = torch.from_numpy(np.asarray(clip_text, np.float32)).to(self.device)
        out = self.model(text, VideoState(*state), with_stage1=False)
        return out.full.cpu().numpy(), out.pooled.gates.cpu().numpy(), out.pooled.attention.cpu().numpy()

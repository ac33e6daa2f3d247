"""Scoring for evaluation: every (text j, video i) pair with v_hat_i(t_j), in chunks of texts.

The scorers see only the query texts and the candidate videos, never which caption belongs to which
video: pooling a candidate with its own caption (the leak of the T-MASS evaluation code) is not
expressible here.
"""

from __future__ import annotations

import numpy as np
import torch

from .heads import GAISHead, VideoBatch


@torch.no_grad()
def full_scores(model: GAISHead, texts: torch.Tensor, videos: VideoBatch, chunk: int = 64) -> np.ndarray:
    """[texts, videos] full GAIS scores; memory bounded by chunk x videos x D."""
    model.eval()
    state = model.prepare(videos)  # the query-independent part, once for all chunks
    rows = [model(texts[i : i + chunk], state, with_stage1=False).full.cpu() for i in range(0, len(texts), chunk)]
    return torch.cat(rows).numpy() if rows else np.zeros((0, len(videos.frames)), np.float32)


@torch.no_grad()
def stage1_scores(model: GAISHead, texts: torch.Tensor, videos: VideoBatch) -> np.ndarray:
    model.eval()
    text = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    return (text @ model.stage1(videos).T).cpu().numpy()


@torch.no_grad()
def two_stage_scores(
    model: GAISHead, texts: torch.Tensor, videos: VideoBatch, stage1: np.ndarray, k: int, max_pairs: int | None = None
) -> np.ndarray:
    """Stage-1 top K re-ranked by the full score; the rest keep their stage-1 order below them.

    Texts go in groups scored against the union of their candidates (at most `max_pairs` pairs a group), not
    one at a time: one text per call is thousands of small launches and host copies on a GPU (10.7 s against
    1.5 s for the full score at 5k x 5k, K=500, on an H200). A pair's score does not depend on the other
    texts or videos in its call, so the result is the same. The group size trades launches against the pairs
    scored in vain (a union is up to group x K videos): groups of up to 64 texts on a GPU, of 8 on a CPU
    (8.1 s one at a time, 6.2 s in 8s, 13.8 s in 64s at 1k x 1k, K=100, on 2 cores)."""
    model.eval()
    k = min(k, stage1.shape[1])
    if max_pairs is None:
        max_pairs = 1 << 20 if next(model.parameters()).is_cuda else 64 * k
    order = np.argsort(-stage1, axis=1, kind="stable")[:, :k]
    scores = stage1 - 10.0  # cosines are in [-1, 1]: every re-ranked candidate lands above every other
    state = model.prepare(videos)
    group = max(1, min(64, int((max_pairs / max(k, 1)) ** 0.5)))  # group x (group x K candidates) <= max_pairs
    for start in range(0, len(order), group):
        candidates = order[start : start + group]
        union, where = np.unique(candidates, return_inverse=True)
        full = model(texts[start : start + group], state.select(torch.from_numpy(union)), with_stage1=False).full
        rows = np.arange(len(candidates))[:, None]
        scores[start + rows, candidates] = full.cpu().numpy()[rows, where.reshape(candidates.shape)]
    return scores

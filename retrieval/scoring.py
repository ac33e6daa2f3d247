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
    model: GAISHead, texts: torch.Tensor, videos: VideoBatch, stage1: np.ndarray, k: int
) -> np.ndarray:
    """Stage-1 top K re-ranked by the full score; the rest keep their stage-1 order below them."""
    model.eval()
    k = min(k, stage1.shape[1])
    order = np.argsort(-stage1, axis=1, kind="stable")[:, :k]
    scores = stage1 - 10.0  # cosines are in [-1, 1]: every re-ranked candidate lands above every other
    state = model.prepare(videos)
    for j, candidates in enumerate(order):
        scores[j, candidates] = (
            model(texts[j : j + 1], state.select(torch.from_numpy(candidates)), with_stage1=False).full[0].cpu().numpy()
        )
    return scores

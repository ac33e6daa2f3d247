"""Retrieval metrics, pessimistic on ties.

The rank of the right answer counts every candidate that scores at least as high as it, so a model
that cannot tell candidates apart gets the worst rank, never the best.
"""

from __future__ import annotations

import numpy as np


def pessimistic_ranks(scores: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """1-based rank of answers[i] in row i of scores: how many candidates score >= the answer."""
    scores = np.asarray(scores, dtype=np.float64)
    answer_scores = scores[np.arange(len(scores)), answers]
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return (scores >= answer_scores[:, None]).sum(axis=1)


def summarise(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    return {
        "R@1": 100.0 * float(np.mean(ranks <= 1)),
        "R@5": 100.0 * float(np.mean(ranks <= 5)),
        "R@10": 100.0 * float(np.mean(ranks <= 10)),
        "MdR": float(np.median(ranks)),
        "MnR": float(np.mean(ranks)),
        "MRR": 100.0 * float(np.mean(1.0 / ranks)) if len(ranks) else 0.0,
        "count": int(len(ranks)),
    }


def text_to_video(scores: np.ndarray, caption_video: np.ndarray) -> dict[str, float]:
    """scores [texts, videos]; caption_video[j] is the video that text j describes."""
    check_shapes(scores, caption_video)
    return summarise(pessimistic_ranks(scores, caption_video))


def video_to_text(scores: np.ndarray, caption_video: np.ndarray) -> dict[str, float]:
    """Each video's rank is that of the best-ranked of its captions among all texts."""
    check_shapes(scores, caption_video)
    by_video = np.asarray(scores, dtype=np.float64).T  # [videos, texts]
    ranks = np.full(by_video.shape[0], np.inf)
    for text, video in enumerate(caption_video):
        rank = (by_video[video] >= by_video[video, text]).sum()
        ranks[video] = min(ranks[video], rank)
    if np.isinf(ranks).any():
        raise ValueError(f"{int(np.isinf(ranks).sum())} videos have no caption: video-to-text is undefined for them")
    return summarise(ranks)


def check_shapes(scores: np.ndarray, caption_video: np.ndarray) -> None:
    if scores.ndim != 2 or scores.shape[0] != len(caption_video):
        raise ValueError(f"scores {scores.shape} do not match {len(caption_video)} captions")
    if len(caption_video) and (caption_video.min() < 0 or caption_video.max() >= scores.shape[1]):
        raise ValueError("a caption points at a video outside the score matrix")


def dual_softmax(scores: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """DSL: rescale text-to-video scores by a softmax over the texts (uses the whole query set)."""
    logits = np.asarray(scores, dtype=np.float64) * temperature
    logits -= logits.max(axis=0, keepdims=True)
    prior = np.exp(logits)
    prior /= prior.sum(axis=0, keepdims=True)
    return scores * prior

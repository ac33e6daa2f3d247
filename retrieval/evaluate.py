"""Evaluation of a trained head on one split: full scoring, stage-1, two stages, DSL beside."""

from __future__ import annotations

import time

import numpy as np
import torch

from .data import Split
from .heads import GAISHead
from .metrics import dual_softmax, text_to_video, video_to_text
from .scoring import full_scores, stage1_scores, two_stage_scores


def both_directions(scores: np.ndarray, caption_video: np.ndarray) -> dict:
    return {"t2v": text_to_video(scores, caption_video), "v2t": video_to_text(scores, caption_video)}


def text_to_video_loss(scores: np.ndarray, caption_video: np.ndarray, scale: float) -> float:
    """Cross-entropy of each caption's own video among all videos, at the model's logit scale: a smooth
    measure of the ranking that keeps moving after R@5 and R@10 have reached 100 on a small split."""
    logits = torch.from_numpy(scores).double() * scale
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(caption_video).long()))


def text_to_video_margin(scores: np.ndarray, caption_video: np.ndarray) -> float:
    """Mean over captions of (own video's score - best other video's score), in the score's own units (no
    temperature): how safely the split is ranked. It keeps measuring once every caption ranks first."""
    rows = np.arange(len(caption_video))
    own = scores[rows, caption_video]
    others = np.array(scores, dtype=np.float64, copy=True)
    others[rows, caption_video] = -np.inf
    return float(np.mean(own - others.max(axis=1))) if scores.shape[1] > 1 else 0.0


def evaluate(
    model: GAISHead, split: Split, device: torch.device, chunk: int = 64, rerank_k: int = 0, dsl: bool = False
) -> dict:
    videos = split.videos.take(np.arange(len(split.video_ids))).to(device)  # the split's videos, all at once
    texts = split.text_features.to(device).float()
    results: dict = {"split": split.name, "texts": len(split), "videos": len(split.video_ids)}
    started = time.perf_counter()
    full = full_scores(model, texts, videos, chunk)
    results["full"] = {
        **both_directions(full, split.caption_video),
        "t2v_loss": text_to_video_loss(full, split.caption_video, float(model.scale().detach())),
        "t2v_margin": text_to_video_margin(full, split.caption_video),
        "seconds": time.perf_counter() - started,
    }
    started = time.perf_counter()
    first = stage1_scores(model, texts, videos)
    results["stage1"] = {
        **both_directions(first, split.caption_video),
        "seconds": time.perf_counter() - started,
    }
    if rerank_k:
        started = time.perf_counter()
        two = two_stage_scores(model, texts, videos, first, rerank_k)
        results[f"two-stage@{rerank_k}"] = {
            **both_directions(two, split.caption_video),
            "seconds": time.perf_counter() - started + results["stage1"]["seconds"],
        }
    if dsl:  # uses the whole query set's statistics: reported beside the plain numbers, never instead
        results["full+DSL"] = {
            "t2v": text_to_video(dual_softmax(full), split.caption_video),
            "v2t": video_to_text(dual_softmax(full.T).T, split.caption_video),
        }
    return results

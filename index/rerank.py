"""The second stage of a search: score candidate videos from their per-frame inputs, and say frame by
frame why (METHOD.md sections 2-3 and 6).

One computation serves the ranked list (`gais-pipe query`, the service) and the explain figure, so a
page and a figure never disagree about a video: with trained heads the full GAIS score, the audio
gate of each frame and the attention the query paid to it (computed by the engine's heads: torch, or
their ONNX export); zero-shot the index's own score (the mean of unit CLIP frames against the query) and
each frame's cosine with the query instead of attention, with no gate. Both engines share this file, and
it imports neither.
"""

from __future__ import annotations

import numpy as np

from .hits import FrameScores

HEADS_INPUTS = ("frame_features", "audio_features", "audio_mask")


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit rows (torch's F.normalize)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def zero_shot_scores(clip_text: np.ndarray, rows: dict[str, np.ndarray]) -> FrameScores:
    """No heads: each video's score is the index's (its unit mean of unit frames against the unit query) and
    each frame's cosine with the query stands in for attention."""
    query = normalize(np.asarray(clip_text, np.float32))[0]
    frames = normalize(np.asarray(rows["frame_features"], np.float32))
    cosines = np.einsum("d,mtd->mt", query, frames)
    score = normalize(frames.mean(axis=1)) @ query
    return FrameScores(score, cosines, None, _mask(rows), _times(rows), "cos(query, frame)")


def heads_scores(
    full: np.ndarray, gates: np.ndarray, attention: np.ndarray, rows: dict[str, np.ndarray]
) -> FrameScores:
    """The heads' answer for one query ([1, M] scores, [1, M, T] gates and attention) as FrameScores."""
    return FrameScores(full[0], attention[0], gates[0], _mask(rows), _times(rows), "attention")


def take(rows: dict[str, np.ndarray], positions: list[int]) -> dict[str, np.ndarray]:
    """The heads' inputs of the store rows at `positions`."""
    return {name: rows[name][positions] for name in HEADS_INPUTS}


def _mask(rows: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(rows["audio_mask"], dtype=bool)


def _times(rows: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(rows["frame_times"], dtype=np.float32)

"""Audio neighbour swap: a training augmentation that keeps what a sound is and hides which clip it came from.

Features are frozen, so every training clip brings the very same audio vectors to every epoch. A sound that no
caption names (wind, hum, random noise) is then still a perfect fingerprint of its clip: the heads learn to read
the clip's caption off it, the gate opens for it, and on new clips the same kind of sound says nothing and pulls
the fused frames away (make-synthetic: muting the noise clips at test time lifted R@1 from 84 to 93 and from 88
to 94, while on the training clips it changed nothing). Here, with probability p, a training video hears one of
its k nearest neighbours' audio (cosine of the mean standardised audio over its heard segments) instead of its
own. A named sound's neighbours are mostly the same sound, so its caption stays true; a noise's neighbours are
other noises, so the fingerprint is gone and letting it in stops paying on the training clips too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .heads import VideoBatch


def mean_heard_audio(videos, standardise, chunk: int = 1024) -> tuple[torch.Tensor, np.ndarray]:
    """[N, Da] mean standardised audio over each video's heard segments, and which videos have any sound."""
    means, heard = [], []
    for start in range(0, len(videos), chunk):
        batch = videos.take(np.arange(start, min(start + chunk, len(videos))))
        with torch.no_grad():
            audio = standardise(batch.audio.float())
        means.append(heard_mean(audio, batch.mask))
        heard.append(batch.mask.any(1).numpy())
    return torch.cat(means), np.concatenate(heard)


def heard_mean(audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, Da] each clip's mean audio over its heard segments (zero for a silent clip)."""
    weights = mask.float().unsqueeze(-1)
    return (audio.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def same_sound(audio: torch.Tensor, heard: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B, B] whether two clips sound the same: the cosine of their mean standardised audio over heard frames at
    least `threshold` (the diagonal is False); the measure the neighbour swap ranks by. From the frozen inputs,
    as the adaptive margin's closeness: on make-synthetic's same-kinds collection clips of one named sound meet
    at 0.957 or more (1st percentile) and clips of one kind at other pitches or words at 0.675 (median, 0.952 at
    the 99th percentile)."""
    mean = F.normalize(heard_mean(audio, heard), dim=-1)
    same = (mean @ mean.T >= threshold) & heard.any(-1)[:, None] & heard.any(-1)[None, :]
    return same.fill_diagonal_(False)


class AudioNeighbours:
    """Each heard training video's k nearest neighbours by audio, searched among up to `pool` heard videos (a
    random sample beyond that: the search is N x pool dot products, 63 s on this project's 2 busy CPU cores at
    N = 200k, Da = 512, pool = 20k, once per run)."""

    def __init__(self, videos, standardise, k: int, pool: int, seed: int, chunk: int = 4096):
        means, heard = mean_heard_audio(videos, standardise)
        self.neighbours = np.tile(np.arange(len(heard))[:, None], (1, max(k, 1)))  # silent videos keep their own
        candidates = np.flatnonzero(heard)
        if len(candidates) > pool:
            candidates = np.sort(np.random.default_rng(seed).choice(candidates, pool, replace=False))
        if k < 1 or len(candidates) < 2:
            return
        k = min(k, len(candidates) - 1)
        unit = F.normalize(means, dim=-1)
        reference = unit[candidates]
        for start in range(0, len(heard), chunk):
            rows = np.arange(start, min(start + chunk, len(heard)))
            similarity = unit[rows] @ reference.T
            similarity[torch.from_numpy(rows[:, None] == candidates[None, :])] = -float("inf")  # never itself
            nearest = candidates[similarity.topk(k, dim=1).indices.numpy()]
            keep = heard[rows]
            self.neighbours[rows[keep], :k] = nearest[keep]
            self.neighbours[rows[keep], k:] = nearest[keep][:, :1]

    def describe(self, probability: float) -> str:
        heard = int((self.neighbours != np.arange(len(self.neighbours))[:, None]).any(1).sum())
        return (
            f"audio swap: each training video hears one of its {self.neighbours.shape[1]} nearest neighbours' audio "
            f"with probability {probability:g} ({heard} of {len(self.neighbours)} videos have neighbours)"
        )

    def audio_rows(self, rows: np.ndarray, probability: float, generator: np.random.Generator) -> np.ndarray:
        """Whose audio each video of a batch hears: its own, or with `probability` a random neighbour's."""
        swap = generator.random(len(rows)) < probability
        choice = self.neighbours[rows, generator.integers(0, self.neighbours.shape[1], len(rows))]
        return np.where(swap, choice, rows)


def with_audio_of(videos, rows: np.ndarray, audio_rows: np.ndarray) -> VideoBatch:
    """The batch's frames with the audio (and its mask) of `audio_rows`; one read when nothing was swapped."""
    batch = videos.take(rows)
    if np.array_equal(rows, audio_rows):
        return batch
    heard = videos.take(audio_rows)
    return VideoBatch(batch.frames, heard.audio, heard.mask)


def silence_some(videos: VideoBatch, probability: float, generator: np.random.Generator) -> VideoBatch:
    """The batch with each clip heard as silent (its audio mask cleared) with `probability` (train.audio_drop), so
    that its captions must be found by its frames; the same batch, and no draw, when the probability is 0."""
    if not probability:
        return videos
    silent = torch.from_numpy(generator.random(len(videos)) < probability)
    return VideoBatch(videos.frames, videos.audio, videos.mask & ~silent[:, None].to(videos.mask.device))

"""Per-dimension standardisation of the frozen inputs (METHOD.md section 1, "Standardisation").

Frozen features arrive with large shared offsets: the frames of one collection can share a cosine of
~0.99 under a random CLIP, and raw log-mel sits far from zero with a norm several times the frames'.
Unstandardised, the fused frame is mostly audio, the gate's logit is mostly a', and cosines between
videos say little. The statistics are fitted once on the train split and kept as buffers of the heads,
so every consumer of a checkpoint (eval, build-index, query, explain) applies exactly the same map.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Moments:
    """Running count, sum and sum of squares per dimension, in float64 (stable over millions of rows)."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.squares = torch.zeros(dim, dtype=torch.float64)

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1]).to(torch.float64).cpu()
        self.count += len(rows)
        self.sum += rows.sum(0)
        self.squares += (rows * rows).sum(0)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count == 0:  # nothing seen (e.g. no video has sound): leave the input as it is
            return torch.zeros_like(self.sum), torch.ones_like(self.sum)
        mean = self.sum / self.count
        std = (self.squares / self.count - mean * mean).clamp_min(0).sqrt()
        # a constant dimension would be divided by ~0: floor it relative to the typical spread
        floor = 1e-3 * float(std.mean()) + 1e-8
        return mean, std.clamp_min(floor)


class Standardiser(nn.Module):
    """x -> (x - mean) / std per dimension; the identity until fitted."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    @torch.no_grad()
    def set(self, moments: Moments) -> None:
        mean, std = moments.mean_std()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())


@torch.no_grad()
def fit_statistics(frames: Standardiser, audio: Standardiser, text: Standardiser, split, chunk: int = 1024) -> None:
    """Fit the three standardisers on a split (the train split): frames over all frames, audio over
    the frames that have sound only (zeros standing in for silence would drag the mean), text over all
    captions. Reads the videos `chunk` at a time, so lazily loaded collections work too."""
    frame_moments, audio_moments, text_moments = (
        Moments(len(frames.mean)),
        Moments(len(audio.mean)),
        Moments(len(text.mean)),
    )
    for start in range(0, len(split.videos), chunk):
        batch = split.videos.take(np.arange(start, min(start + chunk, len(split.videos))))
        frame_moments.add(batch.frames)
        audio_moments.add(batch.audio[batch.mask.bool()])
    text_moments.add(split.text_features)
    frames.set(frame_moments)
    audio.set(audio_moments)
    text.set(text_moments)

"""The second stage of a search: score candidate videos from their per-frame inputs, and say frame by
frame why (METHOD.md sections 2-3 and 6).

One computation serves the ranked list (`gais-pipe query`, the service) and the explain figure, so a
page and a figure never disagree about a video: with trained heads the full GAIS score, the audio
gate of each frame and the attention the query paid to it; zero-shot the index's own score (the
mean of unit CLIP frames against the query) and each frame's cosine with the query instead of
attention, with no gate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.retrieval.heads import VideoBatch, VideoState

from .embeddings import video_embeddings
from .hits import FrameScores


def video_batch(rows: dict[str, np.ndarray], device: torch.device, positions=slice(None)) -> VideoBatch:
    """The heads' input for store rows (all, or those at `positions`)."""
    return VideoBatch(
        torch.from_numpy(rows["frame_features"][positions]),
        torch.from_numpy(rows["audio_features"][positions]),
        torch.from_numpy(np.asarray(rows["audio_mask"][positions], dtype=bool)),
    ).to(device)


@torch.no_grad()
def score_rows(
    model, clip_text: torch.Tensor, rows: dict[str, np.ndarray], device: torch.device, state: VideoState | None = None
) -> FrameScores:
    """Score the store rows `rows` (columns of M videos) against one CLIP text embedding [1, D];
    `state` is the heads' prepared state of the same rows when the caller keeps it."""
    mask = np.asarray(rows["audio_mask"], dtype=bool)
    times = np.asarray(rows["frame_times"], dtype=np.float32)
    clip_text = clip_text.to(device)
    if model is None:
        query = F.normalize(clip_text.float(), dim=-1)[0]
        frames = torch.from_numpy(rows["frame_features"]).to(device).float()
        embeddings = torch.from_numpy(video_embeddings(rows, None, device)).to(device)
        cosines = torch.einsum("d,mtd->mt", query, F.normalize(frames, dim=-1))
        score = (embeddings @ query).cpu().numpy()
        return FrameScores(score, cosines.cpu().numpy(), None, mask, times, "cos(query, frame)")
    out = model(clip_text, state if state is not None else video_batch(rows, device), with_stage1=False)
    return FrameScores(
        out.full[0].cpu().numpy(),
        out.pooled.attention[0].cpu().numpy(),
        out.pooled.gates[0].cpu().numpy(),
        mask,
        times,
        "attention",
    )

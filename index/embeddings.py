"""The query-independent video embedding that goes into the index (METHOD.md section 6)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gais_pipe.retrieval.heads import VideoBatch


@torch.no_grad()
def video_embeddings(columns: dict[str, np.ndarray], model, device: torch.device, chunk: int = 1024) -> np.ndarray:
    """[N, D] unit vectors: the stage-1 embedding with a model, else the mean of unit CLIP frames."""
    out = []
    for start in range(0, len(columns["frame_features"]), chunk):
        frames = torch.from_numpy(columns["frame_features"][start : start + chunk]).to(device).float()
        if model is None:
            out.append(F.normalize(F.normalize(frames, dim=-1).mean(dim=1), dim=-1).cpu())
        else:
            audio = torch.from_numpy(columns["audio_features"][start : start + chunk])
            mask = torch.from_numpy(columns["audio_mask"][start : start + chunk])
            out.append(model.stage1(VideoBatch(frames, audio, mask).to(device)).cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)

"""CLIP text embeddings of captions, from the very checkpoint that made the frame features.

The workdir records the image tower's checkpoint file and sha256; the text tower is loaded from that
file and the hash is checked, so frame and text embeddings always share one CLIP. Embeddings are
cached in <workdir>/text_features.h5 by caption text and reused by later runs.

Only the text tower is loaded (`clip_text`), without importing open_clip, where the architecture and
file allow; otherwise the whole open_clip model. The checkpoint's hash is the workdir's cached one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gais_pipe.extract.weights import WeightsUnavailable
from gais_pipe.workdir import Workdir, WorkdirError

from .clip_text import load_text_tower, trim_bpe_cache


class TextEncoder:
    def __init__(self, work: Workdir, device: torch.device, clip_file: Path | None = None):
        record = work.identity()
        if record is None:
            raise WorkdirError(f"{work.root}: no features yet; run `gais-pipe extract` first")
        clip = record["clip"]
        file = Path(clip_file or clip["file"])
        if not file.is_file():
            raise WeightsUnavailable(
                f"{file}: the CLIP checkpoint that made this workdir's features is gone; pass --clip-weights PATH"
            )
        if work.sha256(file) != clip["sha256"]:
            raise WorkdirError(
                f"{file}: sha256 differs from the checkpoint that made this workdir's frame features "
                f"({clip['sha256'][:12]})"
            )
        self.sha256 = clip["sha256"]
        loaded = load_text_tower(clip["model"], clip["pretrained"], file, clip.get("quick_gelu"))
        self.tower = None  # the TextTower, when the architecture is one it covers
        if loaded is not None:
            tower, self.tokenizer = loaded
            self.tower = tower
            self.encode_tokens, self.embed_dim = tower.to(device), tower.embed_dim
        else:
            import open_clip

            from gais_pipe.extract.clip_model import load_clip

            full = load_clip({"model": clip["model"], "pretrained": str(file)}, work.models_dir, device, self.sha256)
            self.encode_tokens, self.embed_dim = full.model.encode_text, full.embed_dim
            self.tokenizer = open_clip.get_tokenizer(clip["model"])
        self.device = device
        self.cache_path = work.root / "text_features.h5"

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 256) -> np.ndarray:
        """[len(texts), D] float32, not cached (for queries)."""
        out = []
        for start in range(0, len(texts), batch):
            tokens = self.tokenizer(texts[start : start + batch]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                out.append(self.encode_tokens(tokens).float().cpu().numpy())
        trim_bpe_cache(self.tokenizer)
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def _read_cache(self) -> tuple[list[str], np.ndarray]:
        import h5py

        if not self.cache_path.exists():
            return [], np.zeros((0, self.embed_dim), np.float16)
        with h5py.File(self.cache_path, "r") as handle:
            if handle.attrs["clip_sha256"] != self.sha256:
                raise WorkdirError(f"{self.cache_path}: made with another CLIP checkpoint; delete it to re-encode")
            return list(handle["text"].asstr()[()]), handle["embedding"][()]

    def __call__(self, texts: list[str]) -> np.ndarray:
        """[len(texts), D] float32; only captions not seen before are encoded."""
        cached_texts, cached = self._read_cache()
        known = {text: i for i, text in enumerate(cached_texts)}
        new = sorted({t for t in texts if t not in known})
        if new:
            import h5py

            embeddings = self.encode(new).astype(np.float16)
            cached_texts += new
            cached = np.concatenate([cached, embeddings])
            known.update({text: len(known) + i for i, text in enumerate(new)})
            tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
            with h5py.File(tmp, "w") as handle:
                handle.create_dataset("text", data=np.array(cached_texts, dtype=object), dtype=h5py.string_dtype())
                handle.create_dataset("embedding", data=cached)
                handle.attrs["clip_sha256"] = self.sha256
            os.replace(tmp, self.cache_path)
        return cached[[known[t] for t in texts]].astype(np.float32)

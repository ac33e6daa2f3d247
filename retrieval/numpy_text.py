"""CLIP's text tower in numpy, from weights exported once by a process that has torch loaded.

Importing torch takes longer on a small machine than a whole one-query process should, so `query`
encodes its text here instead: `clip_text.TextTower`'s forward (token and position embeddings,
pre-LayerNorm attention blocks under the causal mask, the MLP with exact or quick GELU, the last
LayerNorm, the end-of-text feature, the projection) in float32 numpy. The weights are the tower's own,
written by `export` to <workdir>/models/text-tower-<sha256>.safetensors with the checkpoint's sha256
inside; `load` refuses a file whose hash is not the workdir's checkpoint, so a stale export is never used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FORMAT = 1
META_KEY = "gais_pipe_text_tower"
LN_EPS = 1e-5  # nn.LayerNorm's default, as TextTower uses


def export_path(models_dir: Path, clip_sha256: str) -> Path:
    return Path(models_dir) / f"text-tower-{clip_sha256[:16]}.safetensors"


def export(tower, path: Path, clip_sha256: str) -> None:
    """Write a `clip_text.TextTower`'s weights and shape for `NumpyTextTower` (atomically)."""
    from gais_pipe.workdir.files import save_tensors_atomically

    from .clip_text import QuickGELU

    block = tower.transformer.resblocks[0]
    meta = {
        "format": FORMAT,
        "clip_sha256": clip_sha256,
        "heads": int(block.attn.num_heads),
        "quick_gelu": isinstance(block.mlp.gelu, QuickGELU),
        "context_length": int(tower.context_length),
    }
    state = {name: value.float() for name, value in tower.state_dict().items()}
    save_tensors_atomically(path, state, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def read_meta(path: Path) -> dict | None:
    """The export's description, None when the file is missing or is not an export of this format."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            meta = json.loads((handle.metadata() or {}).get(META_KEY, "null"))
    except Exception:  # a truncated or foreign file: not an export to use
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = LN_EPS) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64 (numpy has none; scipy is not a dependency and costs 0.3 s to import):
    the Chebyshev fit of Numerical Recipes' erfcc, fractional error below 1.2e-7 everywhere, so below
    float32's rounding for GELU's inputs."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly = c + t * poly
    erfc = t * np.exp(-z * z - 1.26551223 + t * poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def gelu(x: np.ndarray) -> np.ndarray:
    """nn.GELU() (exact, with erf; not the tanh approximation)."""
    return (0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(x.dtype)


def quick_gelu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(1.702 * x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow warnings for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class NumpyTextTower:
    """`tokens [N, context] -> [N, embed_dim]` float32, not normalised, as TextTower.forward."""

    def __init__(self, path: Path, clip_sha256: str):
        from safetensors import safe_open

        meta = read_meta(path)
        if meta is None or meta.get("clip_sha256") != clip_sha256:
            raise ValueError(f"{path}: not the text tower of checkpoint {clip_sha256[:12]}")
        self.heads, self.quick_gelu = int(meta["heads"]), bool(meta["quick_gelu"])
        self.context_length = int(meta["context_length"])
        with safe_open(str(path), framework="np") as handle:
            self.weights = {name: handle.get_tensor(name) for name in handle.keys() if name != "token_embedding.weight"}
        self.path = Path(path)
        self.layers = len({name.split(".")[2] for name in self.weights if name.startswith("transformer.resblocks.")})
        self.embed_dim = int(self.weights["text_projection"].shape[1])

    def _token_rows(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows of the ids used (the table is read row by row, not whole)."""
        from safetensors import safe_open

        unique, inverse = np.unique(ids, return_inverse=True)
        with safe_open(str(self.path), framework="np") as handle:
            table = handle.get_slice("token_embedding.weight")
            rows = np.stack([table[int(i) : int(i) + 1][0] for i in unique])
        return rows[inverse.reshape(ids.shape)]

    def _block(self, x: np.ndarray, i: int, mask: np.ndarray) -> np.ndarray:
        prefix = f"transformer.resblocks.{i}."
        w = {name[len(prefix) :]: v for name, v in self.weights.items() if name.startswith(prefix)}
        n, length, width = x.shape
        head = width // self.heads
        h = layer_norm(x, w["ln_1.weight"], w["ln_1.bias"])
        qkv = h @ w["attn.in_proj_weight"].T + w["attn.in_proj_bias"]  # [N, L, 3W]
        q, k, v = (part.reshape(n, length, self.heads, head).transpose(0, 2, 1, 3) for part in np.split(qkv, 3, -1))
        attention = softmax(q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head)) + mask)
        mixed = (attention @ v).transpose(0, 2, 1, 3).reshape(n, length, width)
        x = x + mixed @ w["attn.out_proj.weight"].T + w["attn.out_proj.bias"]
        h = layer_norm(x, w["ln_2.weight"], w["ln_2.bias"])
        h = h @ w["mlp.c_fc.weight"].T + w["mlp.c_fc.bias"]
        h = quick_gelu(h) if self.quick_gelu else gelu(h)
        return x + h @ w["mlp.c_proj.weight"].T + w["mlp.c_proj.bias"]

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """Under the causal mask the end-of-text feature sees only the tokens up to it, so the padding
        after the longest text is cut off, as TextTower does."""
        tokens = np.asarray(tokens, dtype=np.int64)
        ends = tokens.argmax(axis=-1)
        length = int(ends.max()) + 1 if len(tokens) else 1
        tokens = tokens[:, :length]
        mask = np.triu(np.full((length, length), -np.inf, dtype=np.float32), 1)
        x = self._token_rows(tokens) + self.weights["positional_embedding"][:length]
        for i in range(self.layers):
            x = self._block(x, i, mask)
        x = layer_norm(x, self.weights["ln_final.weight"], self.weights["ln_final.bias"])
        x = x[np.arange(len(x)), ends]
        return (x @ self.weights["text_projection"]).astype(np.float32)

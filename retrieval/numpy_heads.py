"""GAISHead's eval-mode scoring of queries, in numpy, for a query process that never imports torch.

This mirrors `heads.GAISHead` (the source of truth) for what `query` needs: `encode_text` (the
standardised, adapted text and the unit stage-1 query), `prepare` (the query-independent video state),
`gates` (with the diagonal or low-rank text x audio term), `pool` (X-Pool or mean) and the full score,
the cosine of the text with the pooled video (eval mode: no perturbation, no dropout). It reads the same
checkpoint's weights. `unsupported` names any checkpoint this mirror does not cover (a switch value or a
model key it does not know, parameters it does not expect), and the caller then uses the torch heads;
tests hold the two equal for every supported variant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .numpy_text import gelu, layer_norm, sigmoid, softmax

GATES = ("text", "text-free", "fixed", "relevance")
BILINEAR = ("none", "diagonal", "lowrank")
POOLINGS = ("xpool", "mean")
MOTIONS = ("none", "absdiff")
PERTURBATIONS = ("none", "isotropic", "svsp")  # training only: eval scores are the same for each
# model keys that change nothing in eval (training-time switches and initial values)
EVAL_NEUTRAL = (
    "standardise",
    "perturbation",
    "radius_init",
    "variance_momentum",
    "dropout",
    "logit_scale_init",
    "gate_rank",
    "gate_init",
)
MIRRORED = ("audio", "gate", "gate_bilinear", "gate_frames", "pooling", "motion", "text_adapter", *EVAL_NEUTRAL)
LN_EPS = 1e-5  # the heads' nn.LayerNorm default
_LINEARS = ("audio_proj", "gate", "gate0", "query", "key", "value", "out", "residual", "radius")
_NORMS = ("norm_text", "norm_frames", "norm_out", "norm_final")


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """F.normalize."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def frame_change(frames: np.ndarray) -> np.ndarray:
    """heads.frame_change: per dimension, the mean absolute difference of each frame from its neighbours."""
    step = np.abs(frames[:, 1:] - frames[:, :-1])
    if step.shape[1] == 0:
        return np.zeros_like(frames)
    return (np.concatenate([step[:, :1], step], axis=1) + np.concatenate([step, step[:, -1:]], axis=1)) / 2


@dataclass
class NumpyState:
    """heads.VideoState, as float32 arrays."""

    frames: np.ndarray
    diff: np.ndarray
    mask: np.ndarray
    gate_logits: np.ndarray
    gate_audio: np.ndarray | None
    ff: np.ndarray
    fd: np.ndarray
    dd: np.ndarray
    cvv: np.ndarray
    cvd: np.ndarray
    cdd: np.ndarray
    key_v: np.ndarray | None
    key_d: np.ndarray | None
    out_v: np.ndarray | None
    out_d: np.ndarray | None


@dataclass
class NumpyScores:
    full: np.ndarray  # [N, M] cos(t, v_hat(t))
    gates: np.ndarray  # [N, M, T]
    attention: np.ndarray  # [N, M, T]


def expected_keys(cfg: dict) -> set[str]:
    """The state-dict names GAISHead has for a model config."""
    keys = {"logit_scale", "text_variance", "variance_updates"}
    keys |= {f"{s}_stats.{p}" for s in ("frame", "audio", "text") for p in ("mean", "std")}
    keys |= {f"{layer}.{p}" for layer in (*_LINEARS, *_NORMS) for p in ("weight", "bias")}
    if cfg.get("text_adapter", True):
        keys |= {f"text_adapter.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    bilinear = cfg.get("gate_bilinear", "none") if cfg.get("gate", "text") == "text" else "none"
    if bilinear == "lowrank":
        keys |= {"gate_text_factor.weight", "gate_audio_factor.weight"}
    elif bilinear == "diagonal":
        keys.add("gate_diagonal")
    if cfg.get("gate", "text") == "relevance":
        keys.add("gate_cosine")
    if cfg.get("motion", "none") == "absdiff":
        keys |= {"motion.weight", "motion.bias"}
    return keys


def unsupported(cfg: dict, names) -> str | None:
    """Why these heads (model config, state-dict names) cannot be scored here; None when they can."""
    unknown = sorted(set(cfg) - set(MIRRORED))
    if unknown:
        return f"model.{unknown[0]} is not mirrored by the numpy heads"
    for key, allowed, default in (
        ("gate", GATES, "text"),
        ("gate_bilinear", BILINEAR, "none"),
        ("pooling", POOLINGS, "xpool"),
        ("motion", MOTIONS, "none"),
        ("perturbation", PERTURBATIONS, "svsp"),
    ):
        if cfg.get(key, default) not in allowed:
            return f"model.{key} = {cfg.get(key)!r} is not mirrored by the numpy heads"
    extra, missing = set(names) - expected_keys(cfg), expected_keys(cfg) - set(names)
    if extra or missing:
        which = sorted(extra)[0] if extra else sorted(missing)[0]
        return f"the checkpoint's parameters differ from what the numpy heads mirror ({which})"
    return None


class NumpyHeads:
    def __init__(self, state: dict[str, np.ndarray], cfg: dict):
        self.w = {name: np.asarray(value, dtype=np.float32) for name, value in state.items()}
        self.dim = int(self.w["norm_text.weight"].shape[0])
        self.frames_per_video = int(self.w["radius.weight"].shape[1])
        self.use_audio = bool(cfg.get("audio", True))
        self.gate_kind = cfg.get("gate", "text")
        self.pooling = cfg.get("pooling", "xpool")
        self.bilinear = cfg.get("gate_bilinear", "none") if self.gate_kind == "text" else "none"
        if self.gate_kind == "relevance":
            self.bilinear = "cosine"
        self.text_adapter = bool(cfg.get("text_adapter", True))
        self.motion = cfg.get("motion", "none") == "absdiff"
        self.gate_frames = bool(cfg.get("gate_frames", True))

    def _linear(self, name: str, x: np.ndarray) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _norm(self, name: str, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], LN_EPS)

    def _standardise(self, which: str, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float32) - self.w[f"{which}_stats.mean"]) / self.w[f"{which}_stats.std"]

    def _frame_gate(self, frames: np.ndarray, w: np.ndarray) -> np.ndarray:
        return frames @ w[: self.dim] if self.gate_frames else np.zeros(frames.shape[:-1], np.float32)

    # --- text ---------------------------------------------------------------------------
    def encode_text(self, text: np.ndarray) -> np.ndarray:
        """GAISHead.encode_text: [N, D] CLIP text -> standardised, adapted text (not unit length)."""
        text = self._standardise("text", text)
        if not self.text_adapter:
            return text
        return text + self._linear("text_adapter.2", gelu(self._linear("text_adapter.0", text)))

    def stage1_query(self, text: np.ndarray) -> np.ndarray:
        """The unit query the index is searched with: normalize(encode_text(t))."""
        return normalize(self.encode_text(text))

    # --- videos -------------------------------------------------------------------------
    def prepare(self, frames: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> NumpyState:
        """GAISHead.prepare of [M, T, D] frames, [M, T, Da] audio and the [M, T] bool mask."""
        d = self.dim
        heard = np.asarray(mask, dtype=np.float32)
        frames = self._standardise("frame", frames)
        if self.motion:
            frames = frames + self._linear("motion", frame_change(frames))
        audio = self._linear("audio_proj", self._standardise("audio", audio) * heard[..., None])
        mask = heard if self.use_audio else np.zeros_like(heard)
        diff = audio - frames
        if self.gate_kind == "text":
            w = self.w["gate.weight"][0]
            gate_logits = self._frame_gate(frames, w) + audio @ w[d : 2 * d]
        elif self.gate_kind in ("text-free", "relevance"):
            w = self.w["gate0.weight"][0]
            gate_logits = self._frame_gate(frames, w) + audio @ w[d:] + self.w["gate0.bias"]
        else:
            gate_logits = np.zeros(frames.shape[:2], np.float32)
        gate_audio = None
        if self.bilinear == "lowrank":
            gate_audio = audio @ self.w["gate_audio_factor.weight"].T
        elif self.bilinear == "diagonal":
            gate_audio = audio * self.w["gate_diagonal"]
        elif self.bilinear == "cosine":
            gate_audio = normalize(audio) * np.exp(self.w["gate_cosine"])
        v_c = frames - frames.mean(-1, keepdims=True)
        d_c = diff - diff.mean(-1, keepdims=True)
        key_v = key_d = out_v = out_d = None
        if self.pooling == "xpool":
            gamma, key = self.w["norm_frames.weight"], self.w["key.weight"]
            key_v, key_d = (v_c * gamma) @ key.T, (d_c * gamma) @ key.T
            mixed = self.w["out.weight"] @ self.w["value.weight"]
            out_v, out_d = (v_c * gamma) @ mixed.T, (d_c * gamma) @ mixed.T
        return NumpyState(
            frames,
            diff,
            mask,
            gate_logits,
            gate_audio,
            (frames * frames).sum(-1),
            (frames * diff).sum(-1),
            (diff * diff).sum(-1),
            (v_c * v_c).sum(-1),
            (v_c * d_c).sum(-1),
            (d_c * d_c).sum(-1),
            key_v,
            key_d,
            out_v,
            out_d,
        )

    # --- query against videos -------------------------------------------------------------
    def gates(self, text: np.ndarray, state: NumpyState) -> np.ndarray:
        """GAISHead.gates: [N, M, T]."""
        d = self.dim
        logits = np.broadcast_to(state.gate_logits[None], (len(text), *state.gate_logits.shape))
        if self.gate_kind == "text":
            logits = logits + (text @ self.w["gate.weight"][0, 2 * d :] + self.w["gate.bias"])[:, None, None]
        if state.gate_audio is not None:
            side = text @ self.w["gate_text_factor.weight"].T if self.bilinear == "lowrank" else text
            if self.bilinear == "cosine":
                side = normalize(text)
            logits = logits + np.einsum("nr,mtr->nmt", side, state.gate_audio)
        return sigmoid(logits) * state.mask[None]

    def pool(self, text: np.ndarray, state: NumpyState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """GAISHead.pool in eval mode: (video [N, M, D], gates [N, M, T], attention [N, M, T])."""
        gates = self.gates(text, state)
        t = self.frames_per_video
        if self.pooling == "mean":
            video = state.frames.mean(axis=1)[None] + np.einsum("nmt,mtd->nmd", gates, state.diff) / t
            return video, gates, np.full_like(gates, 1.0 / t)
        sigma = np.sqrt((state.cvv + 2 * gates * state.cvd + gates**2 * state.cdd) / self.dim + LN_EPS)
        beta = self.w["norm_frames.bias"]
        key_b = self.w["key.weight"] @ beta + self.w["key.bias"]
        query = self._linear("query", self._norm("norm_text", text))
        logits = (
            np.einsum("nd,mtd->nmt", query, state.key_v) + gates * np.einsum("nd,mtd->nmt", query, state.key_d)
        ) / sigma
        logits = (logits + (query @ key_b)[:, None, None]) / np.float32(math.sqrt(self.dim))
        attention = softmax(logits, axis=-1)
        out_b = self.w["out.weight"] @ (self.w["value.weight"] @ beta + self.w["value.bias"]) + self.w["out.bias"]
        weights = attention / sigma
        z = (
            np.einsum("nmt,mtd->nmd", weights, state.out_v)
            + np.einsum("nmt,mtd->nmd", weights * gates, state.out_d)
            + out_b
        )
        z = self._norm("norm_out", z)
        video = self._norm("norm_final", z + self._linear("residual", z))
        return video, gates, attention

    def score(self, clip_text: np.ndarray, state: NumpyState) -> NumpyScores:
        """GAISHead.forward(..., with_stage1=False) in eval mode: the full score and what pooling saw."""
        adapted = self.encode_text(clip_text)
        video, gates, attention = self.pool(adapted, state)
        dots = np.einsum("nd,nmd->nm", adapted, video)
        norms = np.linalg.norm(adapted, axis=-1)[:, None] * np.linalg.norm(video, axis=-1)
        return NumpyScores(dots / np.maximum(norms, 1e-8), gates, attention)


def load_heads(path: Path, feature_hash: str) -> tuple[NumpyHeads | None, str | None]:
    """(heads, None) for a checkpoint of these features that this mirror covers, else (None, why not)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            meta = json.loads((handle.metadata() or {}).get("gais_pipe", "{}"))
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError) as error:  # missing or unreadable: the torch path says what is wrong
        return None, f"{path}: {error.__class__.__name__}"
    if meta.get("feature_hash") != feature_hash:
        return None, f"{path}: trained on other features"
    cfg = (meta.get("config") or {}).get("model")
    if not isinstance(cfg, dict):
        return None, f"{path}: no model config inside"
    reason = unsupported(cfg, state)
    return (None, reason) if reason else (NumpyHeads(state, cfg), None)

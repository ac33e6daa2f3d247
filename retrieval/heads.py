"""The GAIS heads on frozen, cached features (METHOD.md sections 2, 3, 4, 6).

Shapes: N texts, M videos, T frames, D the CLIP width, Da the audio width.

The gate makes every fused frame depend on the text, so a naive implementation builds an
[N, M, T, D] tensor and runs three D x D projections on it. Here every linear map is pushed
through the fusion instead: u = v + g (a' - v) is affine in the scalar gate g, and LayerNorm of it
needs only three dot products, so keys, values and the output projection are computed once per
video frame and mixed per (text, video, frame) with scalars. `reference_scores` keeps the naive
form, and a test holds the two equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .standardise import Standardiser, fit_statistics

GATES = ("text", "text-free", "fixed", "relevance", "match")
BILINEAR = ("none", "diagonal", "lowrank")
PERTURBATIONS = ("none", "isotropic", "svsp")
POOLINGS = ("xpool", "mean")
MOTIONS = ("none", "absdiff")


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.eye_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def frame_change(frames: torch.Tensor) -> torch.Tensor:
    """[M, T, D] -> [M, T, D]: per dimension, the mean absolute difference of frame f from its neighbours
    (one neighbour at either end): 0 for a still shot, large where the picture moves."""
    step = (frames[:, 1:] - frames[:, :-1]).abs()  # [M, T-1, D]
    if step.shape[1] == 0:
        return torch.zeros_like(frames)
    before = torch.cat([step[:, :1], step], dim=1)  # frame 0 takes its only neighbour's step
    after = torch.cat([step, step[:, -1:]], dim=1)
    return (before + after) / 2


@dataclass
class VideoBatch:
    frames: torch.Tensor  # [M, T, D]
    audio: torch.Tensor  # [M, T, Da]
    mask: torch.Tensor  # [M, T] bool: segment has real audio

    def to(self, device) -> VideoBatch:
        return VideoBatch(self.frames.to(device).float(), self.audio.to(device).float(), self.mask.to(device))

    def __len__(self) -> int:
        return len(self.frames)

    def take(self, rows) -> VideoBatch:
        return VideoBatch(self.frames[rows], self.audio[rows], self.mask[rows])


@dataclass
class VideoState:
    """Everything the heads compute from the videos alone, once, whatever the query: fused frames
    are v + g * diff, and keys and output projections split the same way (see the module doc)."""

    frames: torch.Tensor  # [M, T, D]
    diff: torch.Tensor  # [M, T, D] a' - v
    mask: torch.Tensor  # [M, T] float, 0 where no sound (or audio switched off)
    gate_logits: torch.Tensor  # [M, T] the video part of the gate's logit
    gate_audio: torch.Tensor | None  # [M, T, r] the audio side of the bilinear gate term (B a' factored)
    ff: torch.Tensor  # [M, T] v.v
    fd: torch.Tensor  # [M, T] v.diff
    dd: torch.Tensor  # [M, T] diff.diff
    cvv: torch.Tensor  # [M, T] the same three for the centred vectors (LayerNorm's variance)
    cvd: torch.Tensor
    cdd: torch.Tensor
    key_v: torch.Tensor | None  # [M, T, D] (x-pool only)
    key_d: torch.Tensor | None
    out_v: torch.Tensor | None
    out_d: torch.Tensor | None

    def select(self, rows) -> VideoState:
        picked: dict[str, Any] = {name: None if value is None else value[rows] for name, value in vars(self).items()}
        return VideoState(**picked)


@dataclass
class Pooled:
    video: torch.Tensor  # [N, M, D] v_hat: the video as seen by each text
    gates: torch.Tensor  # [N, M, T] audio gate per frame
    attention: torch.Tensor  # [N, M, T] attention over frames
    frame_text_cos: torch.Tensor  # [N, M, T] cos(t, u_f), the input of the perturbation radius
    gate_logits: torch.Tensor | None = None  # [N, M, T] the gates before sigmoid and mask (the match loss's input)


class GAISHead(nn.Module):
    text_variance: torch.Tensor  # buffers, registered in __init__
    variance_updates: torch.Tensor

    def __init__(self, dim: int, audio_dim: int, frames: int, cfg: dict):
        super().__init__()
        self.dim, self.frames = dim, frames
        self.use_audio = bool(cfg.get("audio", True))
        # Whether the gates read the frame (w_v . v) beside the sound. Off by default: with it, the gate learnt to
        # shut the noise of the training clips by their looks, which new clips do not share (demo: noise gate 0.14
        # on train clips, 0.28 on test clips); a missing key (checkpoints before the switch) means on.
        self.gate_frames = bool(cfg.get("gate_frames", True))
        self.gate_kind = cfg.get("gate", "text")
        self.pooling = cfg.get("pooling", "xpool")
        self.perturbation = cfg.get("perturbation", "svsp")
        self.bilinear = cfg.get("gate_bilinear", "none") if self.gate_kind == "text" else "none"
        if self.gate_kind == "relevance":  # text-free logit + alpha * cos(t, a'), alpha >= 0 (see gates())
            self.bilinear = "cosine"
        if self.gate_kind == "match":  # s * cos(P_t t, P_a a) + b: does the caption describe this frame's sound?
            self.bilinear = "match"
        if (
            self.gate_kind not in GATES
            or self.perturbation not in PERTURBATIONS
            or self.pooling not in POOLINGS
            or cfg.get("gate_bilinear", "none") not in BILINEAR
            or cfg.get("motion", "none") not in MOTIONS
        ):
            raise ValueError(
                f"model: gate in {GATES}, perturbation in {PERTURBATIONS}, pooling in {POOLINGS}, "
                f"gate_bilinear in {BILINEAR}, motion in {MOTIONS}"
            )
        # Per-dimension standardisation of the frozen inputs, fitted on the train split (fit_inputs).
        self.frame_stats, self.audio_stats, self.text_stats = (
            Standardiser(dim),
            Standardiser(audio_dim),
            Standardiser(dim),
        )
        # Text adapter t <- t + MLP(t), last layer zero so training starts from CLIP's text embedding.
        self.text_adapter = None
        if cfg.get("text_adapter", True):
            first, last = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.text_adapter = nn.Sequential(first, nn.GELU(), last)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # Motion (this project's): v_f <- v_f + W |change of v around f|, W zero so training starts from the
        # paper. Pooling is a weighted mean of frames, which cannot tell a still object from a moving one: a
        # linear probe reads motion from the mean frame at 0.49 (3 kinds), from the mean and mean |change| at 0.99.
        self.motion = None
        if cfg.get("motion", "none") == "absdiff":
            self.motion = nn.Linear(dim, dim)
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)
        # FGF (section 2) and the text-free stage-1 gate (section 6).
        self.audio_proj = nn.Linear(audio_dim, dim)
        self.gate = nn.Linear(3 * dim, 1)
        self.gate0 = nn.Linear(2 * dim, 1)
        nn.init.zeros_(self.gate.weight)  # gates start at gate_init (0 where there is no sound)
        nn.init.zeros_(self.gate0.weight)
        # The gates start mostly closed (0.1 where there is sound): audio earns its place. From 0.5 the
        # fused frames start half audio, and on a small collection the heads then keep unnamed noise in
        # (BENCHMARKS.md, "Training with the defaults": 0.2 beat 0.5, 0.1 beat 0.2 on three collections).
        opening = float(cfg.get("gate_init", 0.2))
        nn.init.constant_(self.gate.bias, math.log(opening / (1 - opening)))
        nn.init.constant_(self.gate0.bias, math.log(opening / (1 - opening)))
        self._init_bilinear(int(cfg.get("gate_rank", 8)))
        self._init_match(audio_dim, int(cfg.get("gate_match_dim", 64)), opening)
        # X-Pool cross-attention (section 3), one head, linear layers initialised to identity.
        self.norm_text = nn.LayerNorm(dim)
        self.norm_frames = nn.LayerNorm(dim)
        self.query, self.key, self.value, self.out = (_identity_linear(dim) for _ in range(4))
        self.norm_out = nn.LayerNorm(dim)
        self.residual = _identity_linear(dim)
        self.dropout = nn.Dropout(float(cfg.get("dropout", 0.1)))
        self.norm_final = nn.LayerNorm(dim)
        # SVSP radius, one per (text, video) pair, from cos(t, u_f) over the T frames; the semantic variance.
        self.radius = nn.Linear(frames, 1)
        nn.init.zeros_(self.radius.weight)
        nn.init.constant_(self.radius.bias, math.log(float(cfg.get("radius_init", 0.1))))
        self.register_buffer("text_variance", torch.ones(dim))  # flat (isotropic) until first measured
        self.register_buffer("variance_updates", torch.zeros((), dtype=torch.long))
        self.variance_momentum = float(cfg.get("variance_momentum", 0.99))
        scale = cfg.get("logit_scale_init", 1 / 0.07)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(float(scale))))

    def _init_bilinear(self, rank: int) -> None:
        """The text x audio term of the gate. t^T B a' with B = U^T V of rank r, or diagonal: it starts at zero
        (V = 0, or b = 0), so training starts from the linear gate; U is random so V gets a gradient. For the
        relevance gate, alpha * cos(t, a') with alpha = exp(.) >= 0, starting at 1."""
        self.gate_text_factor = self.gate_audio_factor = self.gate_diagonal = self.gate_cosine = None
        if self.bilinear == "cosine":  # log alpha (from alpha = 5 the gates opened so wide that the frames were
            self.gate_cosine = nn.Parameter(torch.tensor(0.0))  # mostly audio: held-out R@1 89 against 96)
        elif self.bilinear == "lowrank":
            self.gate_text_factor = nn.Linear(self.dim, rank, bias=False)
            nn.init.normal_(self.gate_text_factor.weight, std=self.dim**-0.5)
            self.gate_audio_factor = nn.Linear(self.dim, rank, bias=False)
            nn.init.zeros_(self.gate_audio_factor.weight)
        elif self.bilinear == "diagonal":
            self.gate_diagonal = nn.Parameter(torch.zeros(self.dim))

    def _init_match(self, audio_dim: int, width: int, opening: float) -> None:
        """The match gate (gate = "match"): g = sigmoid(s cos(P_t t, P_a a_f) + b) on the standardised audio of
        frame f, its own small text-audio space, apart from the fusion's a' (which must stay like a frame). With
        loss.gate_match_weight it is trained as a text-audio matcher (losses.gate_match_loss), so a gate reads as
        the chance that the caption describes the sound of that frame: relevance, not the sound's acoustic class."""
        self.match_text = self.match_audio = self.match_scale = self.match_bias = None
        if self.bilinear != "match":
            return
        self.match_text = nn.Linear(self.dim, width)
        self.match_audio = nn.Linear(audio_dim, width)
        self.match_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # SigLIP's start
        self.match_bias = nn.Parameter(torch.tensor(math.log(opening / (1 - opening))))

    def no_decay(self, name: str) -> bool:
        """Parameters kept out of weight decay: decaying the logit scale, biases, norm gains, the gate
        and radius (zero-initialised, scalar outputs) or the identity-initialised attention maps pulls
        them towards 0 instead of towards their neutral start. Only the text adapter's and the audio
        projection's matrices are decayed."""
        decayed = ("text_adapter.", "audio_proj.", "motion.", "match_text.", "match_audio.")
        return not name.startswith(decayed) or name.endswith(".bias")

    def fit_inputs(self, split) -> None:
        """Fit the input standardisation on the train split (see standardise.py)."""
        fit_statistics(self.frame_stats, self.audio_stats, self.text_stats, split)

    @classmethod
    def for_features(cls, identity: dict, model_cfg: dict) -> GAISHead:
        """The heads for a workdir's features (its recorded identity: widths and frame count)."""
        return cls(identity["embed_dim"], identity["audio_dim"], identity["features"]["frames"], model_cfg)

    # --- text ---------------------------------------------------------------------------
    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """The standardised, adapted text. Not unit length: the gate sees it at the scale of the
        standardised frames; the cosine and the perturbation use it normalised."""
        text = self.text_stats(text)
        return text + self.text_adapter(text) if self.text_adapter is not None else text

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    # --- fusion -------------------------------------------------------------------------
    def _frames(self, videos: VideoBatch) -> torch.Tensor:
        """The standardised frames, plus the learned motion term where it is on."""
        frames = self.frame_stats(videos.frames)
        if self.motion is not None:
            frames = frames + self.motion(frame_change(frames))
        return frames

    def _frame_gate(self, frames: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The frames' part of a gate's logit, w_v . v (zero with gate_frames off: the gate then reads sound only)."""
        return frames @ w[: self.dim] if self.gate_frames else frames.new_zeros(frames.shape[:-1])

    def _stage1_gate_logits(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """[M, T] logit of the text-free stage-1 gate (section 6): also the text-free and relevance gates' base."""
        w = self.gate0.weight[0]
        return self._frame_gate(frames, w) + audio @ w[self.dim :] + self.gate0.bias

    def _audio(self, videos: VideoBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """a' = P_a a of the standardised audio, and the mask as floats (all zero when audio is off)."""
        heard = videos.mask.float().unsqueeze(-1)
        projected = self.audio_proj(self.audio_stats(videos.audio) * heard)  # silence stays at the origin
        mask = videos.mask.float() if self.use_audio else torch.zeros_like(videos.mask, dtype=torch.float32)
        return projected, mask

    def prepare(self, videos: VideoBatch | VideoState) -> VideoState:
        """The query-independent part of pooling, for a set of videos (computed once per set)."""
        if isinstance(videos, VideoState):
            return videos
        frames = self._frames(videos)
        audio, mask = self._audio(videos)
        diff = audio - frames
        if self.gate_kind == "text":
            w = self.gate.weight[0]
            gate_logits = self._frame_gate(frames, w) + audio @ w[self.dim : 2 * self.dim]
        elif self.gate_kind in ("text-free", "relevance"):  # relevance: the stage-1 gate's logit is its base
            gate_logits = self._stage1_gate_logits(frames, audio)
        elif self.match_bias is not None:  # match: a constant base; the text-audio cosine does the rest
            gate_logits = frames.new_zeros(frames.shape[:2]) + self.match_bias
        else:
            gate_logits = torch.zeros(frames.shape[:2], device=frames.device)
        gate_audio = None
        if self.gate_audio_factor is not None:
            gate_audio = self.gate_audio_factor(audio)
        elif self.gate_diagonal is not None:
            gate_audio = audio * self.gate_diagonal
        elif self.gate_cosine is not None:
            gate_audio = F.normalize(audio, dim=-1) * self.gate_cosine.exp()
        elif self.match_audio is not None and self.match_scale is not None:
            heard = self.audio_stats(videos.audio) * videos.mask.float().unsqueeze(-1)
            gate_audio = F.normalize(self.match_audio(heard), dim=-1) * self.match_scale.exp().clamp(max=100.0)
        v_c = frames - frames.mean(-1, keepdim=True)
        d_c = diff - diff.mean(-1, keepdim=True)
        key_v = key_d = out_v = out_d = None
        if self.pooling == "xpool":
            gamma = self.norm_frames.weight
            key_v, key_d = (v_c * gamma) @ self.key.weight.T, (d_c * gamma) @ self.key.weight.T
            mixed = self.out.weight @ self.value.weight  # out(value(x)) = mixed x + ...
            out_v, out_d = (v_c * gamma) @ mixed.T, (d_c * gamma) @ mixed.T
        return VideoState(
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

    def gates(self, text: torch.Tensor, state: VideoState) -> torch.Tensor:
        """[N, M, T] gates: the video part of the logit plus, for the text-guided gate, a text part."""
        return torch.sigmoid(self.gate_logits(text, state)) * state.mask.unsqueeze(0)

    def gate_logits(self, text: torch.Tensor, state: VideoState) -> torch.Tensor:
        """[N, M, T] the gates' logits (before the sigmoid and the mask of frames with sound)."""
        logits = state.gate_logits.unsqueeze(0).expand(text.shape[0], -1, -1)
        if self.gate_kind == "text":
            logits = logits + (text @ self.gate.weight[0, 2 * self.dim :] + self.gate.bias)[:, None, None]
        if state.gate_audio is not None:  # the bilinear term t^T B a' (or alpha cos(t, a'))
            text_side = self.gate_text_factor(text) if self.gate_text_factor is not None else text
            if self.gate_cosine is not None:
                text_side = F.normalize(text, dim=-1)
            if self.match_text is not None:
                text_side = F.normalize(self.match_text(text), dim=-1)
            logits = logits + torch.einsum("nr,mtr->nmt", text_side, state.gate_audio)
        return logits

    def stage1(self, videos: VideoBatch | VideoState) -> torch.Tensor:
        """Query-independent embedding e_v = normalize(mean_f u0_f) with the text-free gate: [M, D]."""
        state = self.prepare(videos)
        gate = torch.sigmoid(self._stage1_gate_logits(state.frames, state.frames + state.diff)) * state.mask
        fused = state.frames + gate.unsqueeze(-1) * state.diff
        return F.normalize(fused.mean(dim=1), dim=-1)

    # --- pooling ------------------------------------------------------------------------
    def pool(self, text: torch.Tensor, videos: VideoBatch | VideoState) -> Pooled:
        """v_hat_m(t_n) for every text and video, without an [N, M, T, D] tensor."""
        state = self.prepare(videos)
        gate_logits = self.gate_logits(text, state)
        gates = torch.sigmoid(gate_logits) * state.mask.unsqueeze(0)  # [N, M, T], as gates()
        fused_norm = torch.sqrt((state.ff + 2 * gates * state.fd + gates**2 * state.dd).clamp_min(1e-12))
        t_unit = F.normalize(text, dim=-1)
        frame_text_cos = (
            torch.einsum("nd,mtd->nmt", t_unit, state.frames) + gates * torch.einsum("nd,mtd->nmt", t_unit, state.diff)
        ) / fused_norm
        if self.pooling == "mean":  # CLIP4Clip's mean pooling of the (fused) frames
            video = (
                state.frames.mean(dim=1).unsqueeze(0) + torch.einsum("nmt,mtd->nmd", gates, state.diff) / self.frames
            )
            return Pooled(video, gates, torch.full_like(gates, 1.0 / self.frames), frame_text_cos, gate_logits)

        sigma = torch.sqrt(
            (state.cvv + 2 * gates * state.cvd + gates**2 * state.cdd) / self.dim + self.norm_frames.eps
        )  # LayerNorm's std
        beta = self.norm_frames.bias
        key_b = self.key.weight @ beta + self.key.bias
        query = self.query(self.norm_text(text))  # [N, D]
        logits = (
            torch.einsum("nd,mtd->nmt", query, state.key_v) + gates * torch.einsum("nd,mtd->nmt", query, state.key_d)
        ) / sigma
        logits = (logits + (query @ key_b)[:, None, None]) / math.sqrt(self.dim)
        attention = torch.softmax(logits, dim=-1)
        # out(value(LN(u))) = (O_v + g O_d) / sigma + out_b
        out_b = self.out.weight @ (self.value.weight @ beta + self.value.bias) + self.out.bias
        weights = attention / sigma
        z = (
            torch.einsum("nmt,mtd->nmd", weights, state.out_v)
            + torch.einsum("nmt,mtd->nmd", weights * gates, state.out_d)
            + out_b
        )
        z = self.norm_out(z)
        video = self.norm_final(z + self.dropout(self.residual(z)))
        return Pooled(video, gates, attention, frame_text_cos, gate_logits)

    def reference_pool(self, text: torch.Tensor, videos: VideoBatch) -> torch.Tensor:
        """The same v_hat written naively with an [N, M, T, D] tensor (for tests only)."""
        frames = self._frames(videos)
        audio, _ = self._audio(videos)
        gates = self.gates(text, self.prepare(videos))
        fused = frames.unsqueeze(0) + gates.unsqueeze(-1) * (audio - frames).unsqueeze(0)  # [N, M, T, D]
        if self.pooling == "mean":
            return fused.mean(dim=2)
        normed = self.norm_frames(fused)
        keys, values = self.key(normed), self.value(normed)
        query = self.query(self.norm_text(text))
        attention = torch.softmax(torch.einsum("nd,nmtd->nmt", query, keys) / math.sqrt(self.dim), dim=-1)
        z = self.norm_out(self.out(torch.einsum("nmt,nmtd->nmd", attention, values)))
        return self.norm_final(z + self.dropout(self.residual(z)))

    # --- SVSP (section 4) ---------------------------------------------------------------
    @torch.no_grad()
    def update_text_variance(self, text: torch.Tensor, groups: torch.Tensor) -> None:
        """EMA of the per-dimension variance of (normalised) text embeddings among captions of one
        video; over the whole batch when no video has two captions in it."""
        unit = F.normalize(text.float(), dim=-1)
        counts = torch.bincount(groups)
        shared = counts[groups] > 1
        if shared.any():
            members, labels = unit[shared], groups[shared]
            means = torch.zeros(int(groups.max()) + 1, unit.shape[1], device=unit.device).index_add_(0, labels, members)
            means = means / counts.clamp_min(1).unsqueeze(1)
            variance = ((members - means[labels]) ** 2).mean(0)
        elif len(unit) > 1:
            variance = unit.var(dim=0)
        else:
            return
        if self.variance_updates == 0:
            self.text_variance.copy_(variance)
        else:
            self.text_variance.mul_(self.variance_momentum).add_((1 - self.variance_momentum) * variance)
        self.variance_updates += 1

    def perturbing(self) -> bool:
        return self.training and self.perturbation != "none"

    def perturb(
        self,
        text: torch.Tensor,
        frame_text_cos: torch.Tensor,
        radius: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """t~ for every (text, video) pair, [N, M, D]; t itself outside training or with `none`. `eps`
        (standard normal, [N, M, D]) is the caller's when the noise must not depend on this process's
        RNG: data-parallel ranks take their rows of one draw for the global batch."""
        n, m = frame_text_cos.shape[:2]
        if not self.perturbing():
            return text.unsqueeze(1).expand(n, m, -1)
        radius = self.pair_radius(frame_text_cos) if radius is None else radius
        return F.normalize(text, dim=-1).unsqueeze(1) + self.noise(radius, n, m, eps)

    def pair_radius(self, frame_text_cos: torch.Tensor) -> torch.Tensor:
        """r = exp(w_r . c + b_r): one radius per (text, video) pair, [N, M, 1]."""
        return torch.exp(self.radius(frame_text_cos))

    def noise_shape(self) -> torch.Tensor:
        """s: sigma / rms(sigma) for SVSP, ones for isotropic; RMS 1 either way, so both inject the
        same energy and differ only in where it goes."""
        if self.perturbation != "svsp":
            return torch.ones_like(self.text_variance)
        sigma = self.text_variance.clamp_min(1e-12).sqrt()
        return sigma / sigma.pow(2).mean().sqrt()

    def noise(self, radius: torch.Tensor, n: int, m: int, eps: torch.Tensor | None = None) -> torch.Tensor:
        """r * (s * eps) / sqrt(D): E||noise||^2 = r^2 whatever D and the shape are."""
        eps = torch.randn(n, m, self.dim, device=radius.device) if eps is None else eps.to(radius.device)
        return radius * self.noise_shape() * eps / math.sqrt(self.dim)

    # --- scores -------------------------------------------------------------------------
    def forward(
        self,
        text: torch.Tensor,
        videos: VideoBatch | VideoState,
        with_stage1: bool = True,
        positives: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
    ) -> Scores:
        """Every text against every video: the full GAIS score, the stage-1 score, and what pooling saw.

        Everything a loss needs from the parameters is computed here (DDP syncs gradients of what
        forward uses): the logit scale, the perturbation radius of every pair (training only), and
        with `positives` (the column of each text's own video) that of the positive pairs, for the
        support-text term. The scores are computed in fp32 whatever autocast does: at a logit scale of
        100, bf16's steps (0.25-0.5 after scaling) would swamp the differences the loss ranks.
        """
        adapted = self.encode_text(text)
        videos = self.prepare(videos)
        pooled = self.pool(adapted, videos)
        radius = self.pair_radius(pooled.frame_text_cos) if self.perturbing() else None
        query = self.perturb(adapted, pooled.frame_text_cos, radius, eps)
        with torch.autocast(query.device.type, enabled=False):
            full = F.cosine_similarity(query.float(), pooled.video.float(), dim=-1)
            stage1 = F.normalize(adapted.float(), dim=-1) @ self.stage1(videos).float().T if with_stage1 else None
        positive = None
        if positives is not None:
            positive = self.pair_radius(pooled.frame_text_cos[torch.arange(len(text)), positives])
        pair = radius[..., 0] if radius is not None else None
        return Scores(full, stage1, pooled, F.normalize(adapted, dim=-1), self.scale(), positive, pair)


@dataclass
class Scores:
    full: torch.Tensor  # [N, M] cos(t~, v_hat(t))
    stage1: torch.Tensor | None  # [N, M] cos(t, e_v)
    pooled: Pooled
    text: torch.Tensor  # [N, D] adapted text, unit length
    scale: torch.Tensor  # the logit scale
    positive_radius: torch.Tensor | None = None  # [N, 1] perturbation radius of each text's positive pair
    radius: torch.Tensor | None = None  # [N, M] perturbation radius of every pair (training with perturbation)

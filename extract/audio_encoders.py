"""Audio encoders: waveform -> a sequence of feature frames with known times.

Each encoder is split in two so the expensive parts land where they belong: a `frontend`
(picklable, CPU, runs in the decode workers beside the decoder) and `encode` (the model, runs
batched across videos in the main process, on the GPU when there is one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gais_pipe.workdir.hashing import sha256_file

from .weights import WeightsUnavailable, offline


class LogMelFrontend:
    """Log-mel spectrogram, one frame every `hop` samples, frame i centred on sample i * hop."""

    def __init__(self, sample_rate: int, n_mels: int, n_fft: int, hop: int):
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=True, power=2.0
        )

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mel = self.mel(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)))
        return torch.log(mel + 1e-6).T.contiguous().numpy()  # [frames, n_mels]


class LogMelEncoder:
    """Weight-free: the log-mel frames are the features. For tests and offline use.

    `dim` (like every encoder's) is the width after pooling into segments: n_mels, or twice that
    with pool "mean+std".
    """

    name = "logmel"

    def __init__(self, audio_cfg: dict):
        self.sample_rate = int(audio_cfg["sample_rate"])
        hop = int(audio_cfg.get("hop", 160))
        n_mels = int(audio_cfg.get("n_mels", 64))
        self.pool = check_pool(audio_cfg.get("pool", "mean"))
        self.dim = pooled_width(n_mels, self.pool)
        self.frame_rate = self.sample_rate / hop
        self.frontend = LogMelFrontend(self.sample_rate, n_mels, int(audio_cfg.get("n_fft", 400)), hop)
        self.identity = {"encoder": "logmel", "sha256": None}

    def frame_times(self, count: int) -> np.ndarray:
        return np.arange(count) / self.frame_rate

    def encode(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        return prepared


WHISPER_WINDOW_SECONDS = 30
WHISPER_SAMPLES_PER_FRAME = 320  # 16 kHz / 50 encoder frames per second


class WhisperFrontend:
    """Whisper's 80-bin log-mel over 30 s windows; remembers how many encoder frames are real."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor
        self.rate = feature_extractor.sampling_rate

    def __call__(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        window = WHISPER_WINDOW_SECONDS * self.rate
        pieces = [waveform[i : i + window] for i in range(0, max(len(waveform), 1), window)]
        mels = self.feature_extractor(pieces, sampling_rate=self.rate, return_tensors="np").input_features
        valid = np.array([max(1, math.ceil(len(p) / WHISPER_SAMPLES_PER_FRAME)) for p in pieces])
        return mels.astype(np.float32), valid


def resolve_hf_folder(source: str) -> Path:
    """A local folder, or the HF cache's snapshot of a repo id (downloaded unless HF_HUB_OFFLINE=1)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt"], local_files_only=offline())
        )
    except Exception as error:
        raise WeightsUnavailable(
            f"Whisper weights {source!r} are not on this machine and cannot be downloaded here "
            f"({error.__class__.__name__}). "
            f'On a machine with network run: python -c "from huggingface_hub import snapshot_download; '
            f"snapshot_download('{source}')\", copy its HF cache (~/.cache/huggingface) here and set HF_HUB_OFFLINE=1; "
            f"or pass --set features.audio.model=/path/to/whisper-folder"
        ) from None


class WhisperEncoder:
    """Whisper's audio encoder (whisper-base in the paper: 512-d, 50 frames per second)."""

    name = "whisper"

    def __init__(self, audio_cfg: dict, device: torch.device, precision: torch.dtype | None, batch: int):
        from transformers import WhisperFeatureExtractor, WhisperModel

        folder = resolve_hf_folder(str(audio_cfg["model"]))
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), None)
        if weights is None:
            raise WeightsUnavailable(f"{folder}: no model.safetensors in this Whisper folder")
        try:
            extractor = WhisperFeatureExtractor.from_pretrained(folder)
            model = WhisperModel.from_pretrained(folder, use_safetensors=weights.suffix == ".safetensors")
        except Exception as error:
            raise WeightsUnavailable(
                f"{folder}: not a usable Whisper model ({error.__class__.__name__}: {str(error)[:200]})"
            ) from None
        # fp32 weights whatever the file holds (hub checkpoints are often fp16, and transformers keeps a file's
        # dtype): exact on the CPU and at precision = fp32; autocast gives fp16 / bf16 compute on the GPU.
        self.encoder = model.get_encoder().eval().requires_grad_(False).to(device, torch.float32)
        self.device, self.precision, self.batch = device, precision, batch
        self.sample_rate = extractor.sampling_rate
        self.pool = check_pool(audio_cfg.get("pool", "mean"))
        self.dim = pooled_width(model.config.d_model, self.pool)  # after pooling into segments
        self.frame_rate = self.sample_rate / WHISPER_SAMPLES_PER_FRAME
        self.frontend = WhisperFrontend(extractor)
        self.identity = {
            "encoder": "whisper",
            "model": str(audio_cfg["model"]),
            "file": str(weights),
            "sha256": sha256_file(weights),
        }

    def frame_times(self, count: int) -> np.ndarray:
        return (np.arange(count) + 0.5) / self.frame_rate

    @torch.inference_mode()
    def encode(self, prepared: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        windows = np.concatenate([mels for mels, _ in prepared])
        dtype = next(self.encoder.parameters()).dtype  # the input in the weights' dtype, whatever that is
        outputs = []
        for start in range(0, len(windows), self.batch):
            chunk = torch.from_numpy(windows[start : start + self.batch]).to(self.device, dtype)
            with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
                outputs.append(self.encoder(chunk).last_hidden_state.float().cpu().numpy())
        hidden = np.concatenate(outputs)
        results, row = [], 0
        for _, valid in prepared:  # crop Whisper's padding away: only frames of real audio remain
            results.append(np.concatenate([hidden[row + i, :n] for i, n in enumerate(valid)]))
            row += len(valid)
        return results


def make_audio_encoder(audio_cfg: dict, device: torch.device, precision: torch.dtype | None, batch: int):
    encoder = audio_cfg["encoder"]
    if encoder == "logmel":
        return LogMelEncoder(audio_cfg)
    if encoder in ("whisper", "whisper-base"):
        return WhisperEncoder(audio_cfg, device, precision, batch)
    raise ValueError(f"unknown audio encoder {encoder!r} (logmel, whisper)")


@dataclass
class PooledAudio:
    features: np.ndarray  # [T, D] (pool "mean") or [T, 2D] (pool "mean+std") of the encoder frames per segment
    mask: np.ndarray  # [T] True where the segment holds enough real audio


POOLS = ("mean", "mean+std")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"unknown features.audio.pool {pool!r} ({', '.join(POOLS)})")
    return pool


def pooled_width(width: int, pool: str) -> int:
    """Width of a pooled segment vector: the encoder's width, twice that with the std beside the mean."""
    return width * (2 if check_pool(pool) == "mean+std" else 1)


def pool_segments(
    features: np.ndarray,
    times: np.ndarray,
    covered: list[tuple[float, float]],
    bounds: np.ndarray,
    min_coverage: float,
    pool: str = "mean",
) -> PooledAudio:
    """Pool the encoder frames whose centre lies in each frame's segment, on the video's clock.

    A segment counts as heard only if real audio covers at least `min_coverage` of it; frames
    that fall in a gap (lost packets, audio that ends early) never enter the pool. "mean+std" adds
    the standard deviation over the segment's frames after the mean: a mean alone cannot tell a
    steady hum from beeps or bursts of the same average spectrum.
    """
    count, dim = len(bounds), features.shape[1]
    pooled = np.zeros((count, pooled_width(dim, pool)), np.float32)
    mask = np.zeros(count, bool)
    spans = np.asarray(covered, np.float64).reshape(-1, 2)
    in_span = ((times[:, None] >= spans[None, :, 0]) & (times[:, None] < spans[None, :, 1])).any(axis=1)
    for f, (start, end) in enumerate(bounds):
        overlap = np.clip(np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start), 0, None).sum()
        if end <= start or overlap / (end - start) < min_coverage:
            continue
        inside = in_span & (times >= start) & (times < end)
        if not inside.any():  # segment shorter than one encoder frame: take the nearest real frame (std 0)
            candidates = np.flatnonzero(in_span)
            if len(candidates) == 0:
                continue
            inside = candidates[[np.argmin(np.abs(times[candidates] - (start + end) / 2))]]
        chosen = features[inside]
        pooled[f, :dim] = chosen.mean(axis=0)
        if pool == "mean+std":
            pooled[f, dim:] = chosen.std(axis=0)
        mask[f] = True
    return PooledAudio(pooled, mask)

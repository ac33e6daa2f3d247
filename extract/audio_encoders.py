"""Audio encoders: waveform -> a sequence of feature frames with known times.

Each encoder is split in two so the expensive parts land where they belong: a `frontend`
(picklable, CPU, runs in the decode workers beside the decoder) and `encode` (the model, runs
batched across videos in the main process, on the GPU when there is one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gais_pipe.workdir.hashing import sha256_file

from .weights import WeightsUnavailable, offline
from .whisper_input import WHISPER_SAMPLES_PER_FRAME, WhisperLogMel, WhisperWindows, whisper_input


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

    def frame_count(self, prepared: np.ndarray) -> int:
        return len(prepared)

    def encode(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        return prepared


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

    def __init__(
        self,
        audio_cfg: dict,
        device: torch.device,
        precision: torch.dtype | None,
        batch: int,
        hash_file: Callable[[Path], str] = sha256_file,
    ):
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
        self.frontend = WhisperLogMel.from_extractor(extractor)
        self.identity = {
            "encoder": "whisper",
            "model": str(audio_cfg["model"]),
            "file": str(weights),
            "sha256": hash_file(weights),
        }

    def frame_times(self, count: int) -> np.ndarray:
        return (np.arange(count) + 0.5) / self.frame_rate

    def frame_count(self, prepared: WhisperWindows) -> int:
        """Encoder frames of real audio a video's input gives (Whisper's padding cropped away)."""
        return int(prepared.valid.sum())

    def _hidden(self, prepared: list[WhisperWindows]):
        """Each video's encoder frames of real audio, on the device: [frames, d_model] float32 per video. The
        30 s windows are built on the device from the frames real audio reached, `batch` windows at a time."""
        dtype = next(self.encoder.parameters()).dtype  # the input in the weights' dtype, whatever that is
        windows = whisper_input(prepared, self.device, dtype)
        hidden = torch.cat(
            [
                self.encoder(windows[start : start + self.batch]).last_hidden_state.float()
                for start in range(0, len(windows), self.batch)
            ]
        )
        videos, row = [], 0
        for video in prepared:  # crop Whisper's padding away: only frames of real audio remain
            videos.append(torch.cat([hidden[row + i, :n] for i, n in enumerate(video.valid.tolist())]))
            row += len(video.valid)
        return videos

    @torch.inference_mode()
    def encode(self, prepared: list[WhisperWindows]) -> list[np.ndarray]:
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            return [h.cpu().numpy() for h in self._hidden(prepared)]

    @torch.inference_mode()
    def encode_pooled(self, prepared: list[WhisperWindows], selections: list[list]) -> list[np.ndarray]:
        """Encode and pool into segments on the device (see `pool_on_device`): only [T, dim] per video comes
        back to the host, not 1500 frames x d_model per 30 s."""
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            hidden = self._hidden(prepared)
        pooled = [pool_on_device(h, selection, self.pool) for h, selection in zip(hidden, selections)]
        return list(torch.stack(pooled).cpu().numpy())


def make_audio_encoder(
    audio_cfg: dict,
    device: torch.device,
    precision: torch.dtype | None,
    batch: int,
    hash_file: Callable[[Path], str] = sha256_file,
):
    encoder = audio_cfg["encoder"]
    if encoder == "logmel":
        return LogMelEncoder(audio_cfg)
    if encoder in ("whisper", "whisper-base"):
        return WhisperEncoder(audio_cfg, device, precision, batch, hash_file)
    raise ValueError(f"unknown audio encoder {encoder!r} (logmel, whisper)")


def make_audio_frontend(audio_cfg: dict) -> tuple[Callable, int]:
    """(the encoder's frontend, its sample rate) without loading the encoder's model: the decode workers
    need only these, and can start while the model loads."""
    encoder = audio_cfg["encoder"]
    if encoder == "logmel":
        frontend = LogMelEncoder(audio_cfg)
        return frontend.frontend, frontend.sample_rate
    if encoder in ("whisper", "whisper-base"):
        from transformers import WhisperFeatureExtractor

        extractor = WhisperFeatureExtractor.from_pretrained(resolve_hf_folder(str(audio_cfg["model"])))
        return WhisperLogMel.from_extractor(extractor), extractor.sampling_rate
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


def segment_frames(
    times: np.ndarray, covered: list[tuple[float, float]], bounds: np.ndarray, min_coverage: float
) -> list[np.ndarray | None]:
    """Which encoder frames each segment pools: those whose centre lies in it, on the video's clock.

    A segment counts as heard only if real audio covers at least `min_coverage` of it (None otherwise);
    frames that fall in a gap (lost packets, audio that ends early) never enter the pool.
    """
    spans = np.asarray(covered, np.float64).reshape(-1, 2)
    in_span = ((times[:, None] >= spans[None, :, 0]) & (times[:, None] < spans[None, :, 1])).any(axis=1)
    selection: list[np.ndarray | None] = []
    for start, end in bounds:
        overlap = np.clip(np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start), 0, None).sum()
        if end <= start or overlap / (end - start) < min_coverage:
            selection.append(None)
            continue
        inside = np.flatnonzero(in_span & (times >= start) & (times < end))
        if len(inside) == 0:  # segment shorter than one encoder frame: take the nearest real frame (std 0)
            candidates = np.flatnonzero(in_span)
            nearest = np.argmin(np.abs(times[candidates] - (start + end) / 2)) if len(candidates) else None
            selection.append(None if nearest is None else candidates[[nearest]])
        else:
            selection.append(inside)
    return selection


def pool_segments(
    features: np.ndarray,
    times: np.ndarray,
    covered: list[tuple[float, float]],
    bounds: np.ndarray,
    min_coverage: float,
    pool: str = "mean",
) -> PooledAudio:
    """Pool the encoder frames of each frame's segment (`segment_frames`), on the host. "mean+std" adds the
    standard deviation over the segment's frames after the mean: a mean alone cannot tell a steady hum from
    beeps or bursts of the same average spectrum."""
    selection = segment_frames(times, covered, bounds, min_coverage)
    return PooledAudio(pool_selected(features, selection, pool), np.array([i is not None for i in selection]))


def pool_selected(features: np.ndarray, selection: list[np.ndarray | None], pool: str) -> np.ndarray:
    """[T, dim] (or [T, 2 dim]) of the frames each segment selected; zeros where it is unheard."""
    dim = features.shape[1]
    pooled = np.zeros((len(selection), pooled_width(dim, pool)), np.float32)
    for f, inside in enumerate(selection):
        if inside is None:
            continue
        chosen = features[inside]
        pooled[f, :dim] = chosen.mean(axis=0)
        if pool == "mean+std":
            pooled[f, dim:] = chosen.std(axis=0)
    return pooled


def pool_on_device(hidden: torch.Tensor, selection: list[np.ndarray | None], pool: str) -> torch.Tensor:
    """`pool_segments` on a tensor where it lies: [T, dim] (or [T, 2 dim]), zeros where a segment is unheard."""
    dim = hidden.shape[1]
    pooled = hidden.new_zeros((len(selection), pooled_width(dim, pool)))
    for f, inside in enumerate(selection):
        if inside is None:
            continue
        chosen = hidden[torch.as_tensor(inside, device=hidden.device)]
        pooled[f, :dim] = chosen.mean(dim=0)
        if pool == "mean+std":
            pooled[f, dim:] = chosen.std(dim=0, correction=0)
    return pooled

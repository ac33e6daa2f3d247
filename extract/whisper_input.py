"""Whisper's log-mel input, split so that decode workers send only what real audio decides.

transformers' `WhisperFeatureExtractor` zero-pads every 30 s window to 480000 samples and returns
[80, 3000] floats per window, 960 KB even for a 2 s clip. Every frame whose STFT window lies wholly in
that zero padding has mel power 0, clamped to 1e-10: its log10 is exactly -10. So the worker
(`WhisperLogMel`) computes only the frames real audio reaches, unnormalised, and the main process
(`whisper_input`) pads them back with -10 and applies Whisper's per-window normalisation on the device,
batched. The result equals `extractor(pieces, sampling_rate=16000, return_tensors="np").input_features`.

This module needs numpy and torch only: the decode workers never import transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SILENT_LOG_MEL = -10.0  # log10(clamp(0, min=1e-10)) in float32: any frame that sees only padding zeros
WHISPER_SAMPLES_PER_FRAME = 320  # 16 kHz / 50 encoder frames per second


@dataclass
class WhisperWindows:
    """One waveform's 30 s windows, reduced to the log-mel frames that real audio touches."""

    frames: list[np.ndarray]  # per window: [n_mels, k] float32 unnormalised log10 mel, k <= frames_per_window
    valid: np.ndarray  # per window: Whisper encoder frames of real audio, max(1, ceil(samples / 320))
    frames_per_window: int  # what each window pads back to (3000)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        """What the frames cost to send between processes (the payload, without pickle's framing)."""
        return sum(f.nbytes for f in self.frames) + self.valid.nbytes


class WhisperLogMel:
    """The worker half: WhisperFeatureExtractor's STFT and mel filters on the real part of each window.

    Copies the extractor's torch path step by step (same torch.stft call, same transposed filter matmul,
    same clamp and log10), so the frames it keeps are the extractor's, not merely close to them.
    """

    def __init__(self, mel_filters: np.ndarray, n_fft: int, hop_length: int, sampling_rate: int, n_samples: int):
        self.mel_filters = np.ascontiguousarray(mel_filters, dtype=np.float32)  # [n_fft // 2 + 1, n_mels]
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.sampling_rate, self.n_samples = int(sampling_rate), int(n_samples)
        self.n_mels = self.mel_filters.shape[1]
        self.frames_per_window = self.n_samples // self.hop_length  # the extractor drops the STFT's last frame
        if self.mel_filters.shape[0] != self.n_fft // 2 + 1:
            raise ValueError(f"mel filters {self.mel_filters.shape} do not fit n_fft {self.n_fft}")

    @classmethod
    def from_extractor(cls, extractor) -> WhisperLogMel:
        """Read a WhisperFeatureExtractor's parameters (duck-typed, so this module never imports transformers)."""
        if getattr(extractor, "dither", 0.0) != 0.0:
            raise ValueError("dither adds noise to the padding too: its frames cannot be rebuilt, use dither=0")
        if getattr(extractor, "padding_value", 0.0) != 0.0:
            raise ValueError("the padding must be silence (padding_value=0) for padded frames to be -10")
        n_samples = getattr(extractor, "n_samples", extractor.chunk_length * extractor.sampling_rate)
        if extractor.mel_filters.shape[1] != extractor.feature_size:
            raise ValueError(f"mel filters {extractor.mel_filters.shape} disagree with feature_size")
        return cls(extractor.mel_filters, extractor.n_fft, extractor.hop_length, extractor.sampling_rate, n_samples)

    def real_frames(self, samples: int) -> int:
        """How many leading frames of a window holding `samples` real samples see any of them.

        Frame t is centred on sample t * hop and spans [t * hop - n_fft / 2, t * hop + n_fft / 2); the periodic
        Hann window is 0 at its first sample, so that one never counts. The reflect padding at the start only
        mirrors samples 1..n_fft / 2, which frames 0 and 1 already reach; the one at the end mirrors the last
        n_fft / 2 samples of the window, which are zeros unless real audio reaches the last frames anyway.
        """
        if samples <= 0:
            return 0
        half = self.n_fft // 2
        return min(self.frames_per_window, (samples + half - 2) // self.hop_length + 1)

    def window_frames(self, piece: np.ndarray) -> np.ndarray:
        """[n_mels, k] unnormalised log10 mel of one window's real frames, as the extractor computes them."""
        count = self.real_frames(len(piece))
        if count == 0:
            return np.zeros((self.n_mels, 0), np.float32)
        # Zero-padded far enough that the STFT's own reflect padding at the end mirrors only zeros, like the
        # extractor's at sample 480000: then frames 0..count-1 see exactly the samples they see there.
        length = min(self.n_samples, len(piece) + self.n_fft // 2 + 1)
        padded = np.zeros(length, np.float32)
        padded[: len(piece)] = piece
        waveform = torch.from_numpy(padded)
        window = torch.hann_window(self.n_fft)
        stft = torch.stft(waveform, self.n_fft, self.hop_length, window=window, return_complex=True)
        magnitudes = (stft[..., :count].abs() ** 2).contiguous()
        mel_spec = torch.from_numpy(self.mel_filters).T @ magnitudes  # the transposed view, like the extractor
        return torch.clamp(mel_spec, min=1e-10).log10().numpy()

    def __call__(self, waveform: np.ndarray) -> WhisperWindows:
        """Split into 30 s windows exactly as WhisperFrontend does, and keep each window's real frames."""
        waveform = np.asarray(waveform, dtype=np.float32)  # the extractor computes in float32 whatever it gets
        window = self.n_samples
        pieces = [waveform[i : i + window] for i in range(0, max(len(waveform), 1), window)]
        with torch.no_grad():
            frames = [self.window_frames(piece) for piece in pieces]
        valid = np.array([max(1, math.ceil(len(p) / WHISPER_SAMPLES_PER_FRAME)) for p in pieces])
        return WhisperWindows(frames, valid, self.frames_per_window)


def whisper_input(
    windows: list[WhisperWindows], device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The main-process half: [total windows, n_mels, frames_per_window] Whisper input, built on `device`.

    One host-to-device copy of the real frames, one scatter into a -10-filled batch, one max per window:
    the normalisation (floor at max - 8, then (x + 4) / 4) is the extractor's, in float32, its max taken over
    the whole padded window; the cast to `dtype` comes last.
    """
    frames = [f for w in windows for f in w.frames]
    if not frames:
        raise ValueError("no windows to build Whisper input from")
    frames_per_window = {w.frames_per_window for w in windows}
    if len(frames_per_window) != 1:
        raise ValueError(f"windows of different lengths {sorted(frames_per_window)} cannot share a batch")
    n_mels = frames[0].shape[0]
    log_spec = torch.full(
        (len(frames), n_mels, frames_per_window.pop()), SILENT_LOG_MEL, dtype=torch.float32, device=device
    )
    lengths = torch.tensor([f.shape[1] for f in frames])
    total = int(lengths.sum())
    if total:
        real = torch.from_numpy(np.concatenate(frames, axis=1)).to(device)  # [n_mels, total]
        window_index = torch.repeat_interleave(torch.arange(len(frames)), lengths)
        starts = torch.cumsum(lengths, 0) - lengths
        frame_index = torch.arange(total) - torch.repeat_interleave(starts, lengths)
        log_spec[window_index.to(device), :, frame_index.to(device)] = real.T
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return ((log_spec + 4.0) / 4.0).to(dtype)

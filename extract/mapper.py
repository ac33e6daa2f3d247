"""The mapper: decoded videos in, fixed-shape feature rows out.

Frames of a whole batch of videos go through the image tower in one call (never one video at a
time); the soundtracks of the batch go through the audio encoder together, and the audio frames
are pooled into the T frame segments on the video's own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .audio_encoders import pool_segments
from .clip_model import LoadedClip
from .reader import DecodedVideo
from .sampling import segment_bounds


@dataclass
class FeatureRow:
    video_id: str
    frame_features: np.ndarray  # [T, D] float16
    audio_features: np.ndarray  # [T, Da] float16 (Da: the encoder's width after pooling, see audio_encoders)
    audio_mask: np.ndarray  # [T] bool
    frame_times: np.ndarray  # [T] float32 seconds
    duration: float
    fps: float
    file_size: int
    file_mtime: float
    has_audio_stream: bool
    audio_dropped_packets: int
    decoder: str


class FeatureMapper:
    def __init__(
        self,
        clip: LoadedClip,
        audio_encoder,
        device: torch.device,
        precision: torch.dtype | None,
        min_coverage: float,
    ):
        self.clip, self.audio_encoder = clip, audio_encoder
        self.device, self.precision, self.min_coverage = device, precision, min_coverage
        self.mean = torch.tensor(clip.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(clip.std, device=device).view(1, 3, 1, 1)
        self.staging: torch.Tensor | None = None  # pinned host memory the pixels go to the GPU from

    def to_device(self, pixels: np.ndarray) -> torch.Tensor:
        """Pixels on the device. On CUDA through a pinned buffer, reused while big enough: a DMA copy that does
        not go through the driver's pageable bounce buffer. Reusing it is safe: the previous call's `.cpu()`
        of its embeddings waited for everything queued before, this copy included."""
        host = torch.from_numpy(pixels)
        if self.device.type != "cuda":
            return host
        if self.staging is None or self.staging.numel() < host.numel():
            self.staging = torch.empty(host.numel(), dtype=torch.uint8, pin_memory=True)
        staged = self.staging[: host.numel()].view(host.shape)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """[N, S, S, 3] uint8 -> [N, D] float16. Pixels travel as uint8 and become floats on the device."""
        images = self.to_device(pixels).permute(0, 3, 1, 2)
        images = (images.float() / 255.0 - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            embeddings = self.clip.model.encode_image(images)
        return embeddings.float().cpu().numpy().astype(np.float16)

    def __call__(self, batch: list[DecodedVideo]) -> list[FeatureRow]:
        count = batch[0].frames.pixels.shape[0]
        pixels = np.concatenate([video.frames.pixels for video in batch])
        image = self.encode_images(pixels).reshape(len(batch), count, -1)
        heard = [video for video in batch if video.audio_input is not None]
        encoded = (
            dict(zip((id(v) for v in heard), self.audio_encoder.encode([v.audio_input for v in heard])))
            if heard
            else {}
        )
        rows = []
        for video, frame_features in zip(batch, image):
            audio = np.zeros((count, self.audio_encoder.dim), np.float16)
            mask = np.zeros(count, bool)
            if id(video) in encoded:
                features = encoded[id(video)]
                sound = video.soundtrack
                times = self.audio_encoder.frame_times(len(features)) + sound.start
                pooled = pool_segments(
                    features,
                    times,
                    sound.covered,
                    segment_bounds(video.frames.duration, count),
                    self.min_coverage,
                    self.audio_encoder.pool,
                )
                audio, mask = pooled.features.astype(np.float16), pooled.mask
            rows.append(
                FeatureRow(
                    video_id=video.ref.id,
                    frame_features=frame_features,
                    audio_features=audio,
                    audio_mask=mask,
                    frame_times=video.frames.times,
                    duration=video.frames.duration,
                    fps=video.frames.fps,
                    file_size=video.ref.size,
                    file_mtime=video.ref.mtime,
                    has_audio_stream=video.has_audio_stream,
                    audio_dropped_packets=video.soundtrack.dropped_packets if video.soundtrack else 0,
                    decoder=video.frames.decoder,
                )
            )
        return rows

"""The mapper: decoded videos in, fixed-shape feature rows out.

Frames of a whole batch of videos go through the image tower in one call (never one video at a
time); the soundtracks of the batch go through the audio encoder together, and the audio frames
are pooled into the T frame segments on the video's own clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .audio_encoders import pool_selected, segment_frames
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


def feature_row(
    video: DecodedVideo, frame_features: np.ndarray, audio_features: np.ndarray, audio_mask: np.ndarray
) -> FeatureRow:
    """A video's row: its features beside what the reader learnt of it."""
    return FeatureRow(
        video_id=video.ref.id,
        frame_features=frame_features,
        audio_features=audio_features,
        audio_mask=audio_mask,
        frame_times=video.frames.times,
        duration=video.frames.duration,
        fps=video.frames.fps,
        file_size=video.ref.size,
        file_mtime=video.ref.mtime,
        has_audio_stream=video.has_audio_stream,
        audio_dropped_packets=video.soundtrack.dropped_packets if video.soundtrack else 0,
        decoder=video.frames.decoder,
    )


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
        self.seconds = {"image": 0.0, "audio": 0.0, "pool": 0.0}  # time spent in each part, summed over calls

    def to_device(self, parts: list[np.ndarray]) -> torch.Tensor:
        """The videos' pixels as one [N, S, S, 3] uint8 tensor on the device. On CUDA each video is copied
        straight into a pinned buffer (no concatenated copy first), reused while big enough: a DMA copy that
        does not go through the driver's pageable bounce buffer. Reusing it is safe: the previous call's
        `.cpu()` of its embeddings waited for everything queued before, this copy included."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])
        count, shape = sum(len(p) for p in parts), parts[0].shape[1:]
        size = count * int(np.prod(shape))
        if self.staging is None or self.staging.numel() < size:
            self.staging = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        staged = self.staging[:size].view(count, *shape)
        offset = 0
        for part in parts:
            staged[offset : offset + len(part)].copy_(torch.from_numpy(part))
            offset += len(part)
        return staged.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """[N, S, S, 3] uint8 (or a list of such, one per video) -> [N, D] float16. Pixels travel as uint8
        and become floats on the device."""
        images = self.to_device(pixels if isinstance(pixels, list) else [pixels]).permute(0, 3, 1, 2)
        images = (images.float() / 255.0 - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            embeddings = self.clip.model.encode_image(images)
        return embeddings.float().cpu().numpy().astype(np.float16)

    def __call__(self, batch: list[DecodedVideo]) -> list[FeatureRow]:
        count = batch[0].frames.pixels.shape[0]
        start = time.perf_counter()
        image = self.encode_images([video.frames.pixels for video in batch]).reshape(len(batch), count, -1)
        self.seconds["image"] += time.perf_counter() - start
        audio = self.encode_audio([video for video in batch if video.audio_input is not None], count)
        rows = []
        for video, frame_features in zip(batch, image):
            silent = (np.zeros((count, self.audio_encoder.dim), np.float16), np.zeros(count, bool))
            features, mask = audio.get(id(video), silent)
            rows.append(feature_row(video, frame_features, features, mask))
        return rows

    def encode_audio(self, heard: list[DecodedVideo], count: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """id(video) -> (pooled [T, Da] float16, heard mask [T]) for the videos with sound. Encoders that pool
        where their features lie (Whisper, on the GPU) get the segments' frames; the rest pool on the host."""
        if not heard:
            return {}
        encoder, selections = self.audio_encoder, []
        for video in heard:
            sound = video.soundtrack
            assert sound is not None  # an audio input comes from a soundtrack
            times = encoder.frame_times(encoder.frame_count(video.audio_input)) + sound.start
            bounds = segment_bounds(video.frames.duration, count)
            selections.append(segment_frames(times, sound.covered, bounds, self.min_coverage))
        masks = [np.array([inside is not None for inside in selection]) for selection in selections]
        inputs = [video.audio_input for video in heard]
        start = time.perf_counter()
        if hasattr(encoder, "encode_pooled"):
            pooled = encoder.encode_pooled(inputs, selections)
            self.seconds["audio"] += time.perf_counter() - start
        else:
            encoded = encoder.encode(inputs)
            middle = time.perf_counter()
            pooled = [pool_selected(f, selection, encoder.pool) for f, selection in zip(encoded, selections)]
            self.seconds["audio"] += middle - start
            self.seconds["pool"] += time.perf_counter() - middle
        return {id(v): (p.astype(np.float16), m) for v, p, m in zip(heard, pooled, masks)}

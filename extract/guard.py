"""The mapper, guarded for a long run on a GPU: what fails where.

- A video the encoders cannot take (a strange shape, say) costs only itself: a batch that fails is
  retried video by video.
- Out of GPU memory is not the videos' fault: the batch is split in halves, down to one video, and the
  smaller size is kept for the rest of the run. Only one video that does not fit stops the run (every
  video needs the same memory, so all the rest would fail too).
- Any other CUDA error (an illegal access, a device-side assert, a lost GPU) leaves the CUDA context
  unusable: every later call would fail the same way, and marking each remaining video failed, one by
  one, would poison the failure log. The run stops with one `DeviceFailure`; rows already encoded are
  kept, and a rerun continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# What CUDA, cuBLAS and cuDNN errors say when torch raises them as plain RuntimeErrors.
_DEVICE_ERROR_MARKS = ("CUDA error", "CUBLAS_STATUS_", "CUDNN_STATUS_", "cuDNN error", "device-side assert")


class DeviceFailure(RuntimeError):
    """The GPU failed in a way no retry fixes: the run stops."""


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "CUDA out of memory" in str(error)


def is_device_failure(error: BaseException) -> bool:
    accelerator_error = getattr(torch, "AcceleratorError", ())
    return isinstance(error, accelerator_error) or any(mark in str(error) for mark in _DEVICE_ERROR_MARKS)


def _first_line(error: BaseException) -> str:
    return f"{error.__class__.__name__}: {(str(error).splitlines() or [''])[0]}"


def _release_cached_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class GuardedMapper:
    """Calls `mapper` (videos -> rows) as the module docstring says. `on_failure(video, error)` hears of each
    video lost; `on_note(text)` of each change of batch size."""

    def __init__(
        self,
        mapper: Callable[[list], list],
        on_failure: Callable[[Any, BaseException], None],
        on_note: Callable[[str], None] = lambda note: None,
    ):
        self.mapper, self.on_failure, self.on_note = mapper, on_failure, on_note
        self.limit: int | None = None  # most videos per call since memory ran out; None: whole batches

    def __call__(self, batch: list) -> list:
        rows, start = [], 0
        while start < len(batch):
            part = batch[start : start + (self.limit or len(batch))]
            done = self._encode(part)
            if done is None:  # out of memory: halve, and keep the smaller size from now on
                if len(part) == 1:
                    raise DeviceFailure(
                        f"out of GPU memory with a single video ({part[0].ref.id}); free the GPU or lower "
                        "runtime.audio_batch. Rows already encoded are kept: run the same command again to go on"
                    )
                self.limit = len(part) // 2
                self.on_note(f"out of GPU memory with {len(part)} videos per batch: now {self.limit}")
                _release_cached_memory()
                continue
            rows.extend(done)
            start += len(part)
        return rows

    def _encode(self, part: list) -> list | None:
        """The rows of `part`, leaving out only the videos that fail on their own; None when out of memory."""
        try:
            return self.mapper(part)
        except Exception as error:
            if is_out_of_memory(error):
                return None
            if is_device_failure(error):
                raise DeviceFailure(
                    f"the GPU failed while encoding {len(part)} video(s) (first: {part[0].ref.id}): "
                    f"{_first_line(error)}. Stopped: nothing more can run on it in this process. Rows already "
                    "encoded are kept: run the same command again to go on"
                ) from error
            if len(part) == 1:
                self.on_failure(part[0], error)
                return []
        rows = []
        for video in part:  # a batch that fails is retried video by video, so only the culprit is lost
            done = self._encode([video])
            if done is None:
                return None
            rows.extend(done)
        return rows

"""The distributor: which part of the work this process does, and on which device.

No scheduler of our own: torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM (an array job's
SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, or srun's SLURM_PROCID / SLURM_NTASKS) say who
we are; explicit flags win over both.
"""

from __future__ import annotations

import hashlib
import os

import torch


def worker_slot(
    num_shards: int | None = None, shard_index: int | None = None, env: dict | None = None
) -> tuple[int, int]:
    """(index, count) of this worker among all workers."""
    env = os.environ if env is None else env
    if num_shards is not None or shard_index is not None:
        count, index = num_shards or 1, shard_index or 0
    elif "WORLD_SIZE" in env and "RANK" in env:
        count, index = int(env["WORLD_SIZE"]), int(env["RANK"])
    elif "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        count, index = int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    else:
        count, index = 1, 0
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return index, count


def owner(video_id: str, count: int) -> int:
    """The worker that extracts a video: a stable hash, so adding videos never moves old ones."""
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


def resolve_device(name: str = "auto", env: dict | None = None) -> torch.device:
    env = os.environ if env is None else env
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(env.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision on CUDA only; the CPU computes in fp32 (its fp16 paths are slow or missing)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]

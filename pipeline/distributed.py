"""The distributor: which part of the work this process does, on which device, with how many cores.

No scheduler of our own: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) or SLURM (an array
job's SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, or srun's SLURM_PROCID / SLURM_NTASKS /
SLURM_LOCALID) say who we are; explicit flags win over both. The functions that read the environment
take it as an argument, so every launcher's case is a plain test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta

import torch
import torch.distributed as dist


def worker_slot(
    num_shards: int | None = None, shard_index: int | None = None, env: Mapping[str, str] | None = None
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


def local_rank(env: Mapping[str, str]) -> int | None:
    """This process's index on its node: torchrun's LOCAL_RANK, else srun's SLURM_LOCALID, else unknown.

    torchrun inside a SLURM allocation sets both (SLURM_LOCALID is then the torchrun's own task): LOCAL_RANK wins.
    """
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if env.get(key, "") != "":
            return int(env[key])
    return None


def ranks_per_node(env: Mapping[str, str]) -> int:
    """How many processes of this job share the node: LOCAL_WORLD_SIZE (torchrun), SLURM_NTASKS_PER_NODE, or
    this node's entry of SLURM_TASKS_PER_NODE ("2(x3),1" = 2, 2, 2, 1 by SLURM_NODEID); 1 when no launcher says."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if env.get(key, "") != "":
            return max(1, int(env[key]))
    if env.get("SLURM_TASKS_PER_NODE", "") != "" and "SLURM_PROCID" in env:
        counts = []
        for part in env["SLURM_TASKS_PER_NODE"].split(","):
            number, _, repeat = part.partition("(x")
            counts += [int(number)] * int(repeat.rstrip(")") or 1)
        return max(1, counts[min(int(env.get("SLURM_NODEID", 0)), len(counts) - 1)])
    return 1


def pick_device(name: str, env: Mapping[str, str], gpus: int) -> torch.device:
    """The device this process should use, from the config's `runtime.device`, the launcher's environment and
    the number of GPUs this process sees (CUDA_VISIBLE_DEVICES already applied). Pure, so it can be tested.

    "auto" and "cuda" give every process of a node its own GPU: local rank (LOCAL_RANK, SLURM_LOCALID; without
    either, the global RANK / SLURM_PROCID) modulo the visible GPUs, so that srun binding one GPU per task
    (CUDA_VISIBLE_DEVICES of one entry) gives cuda:0 everywhere. "cuda:N" is taken as written.
    """
    if name == "cpu" or (name == "auto" and gpus == 0):
        return torch.device("cpu")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    seen = f"{gpus} visible" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
    if name not in ("auto", "cuda"):
        device = torch.device(name)
        if device.type != "cuda":
            return device
        if gpus == 0:
            raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
        if device.index is not None and device.index >= gpus:
            raise ValueError(f"device {name!r} asked for, but only GPUs 0..{gpus - 1} of {seen} exist")
        return device
    if gpus == 0:
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    rank = local_rank(env)
    if rank is None:
        rank = int(env.get("RANK") or env.get("SLURM_PROCID") or 0)
    return torch.device("cuda", rank % gpus)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str = "auto", env: Mapping[str, str] | None = None) -> torch.device:
    """`pick_device` for this process, and bind the process to it (torch.cuda.set_device): NCCL and any
    plain `.cuda()` then use this process's GPU, never everyone's GPU 0."""
    device = pick_device(name, os.environ if env is None else env, visible_gpus())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision on CUDA only; the CPU computes in fp32 (its fp16 paths are slow or missing)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def effective_precision(device: torch.device, precision: str) -> str:
    """What the encoders really compute in, for the feature identity: fp32 on the CPU, the autocast dtype on
    CUDA, and "tf32" for fp32 on CUDA (its matmuls run on tensor cores, see `use_tensor_cores`)."""
    dtype = autocast_dtype(device, precision)
    if dtype is not None:
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return "tf32" if device.type == "cuda" else "fp32"


def use_tensor_cores(device: torch.device) -> None:
    """TF32 for the fp32 matmuls and convolutions that remain on CUDA (all of them at precision = "fp32"):
    about 8x the fp32 throughput on A100/H100 for a 10-bit mantissa, far below the fp16 the features are stored
    in. The one place that sets it, so that the feature identity's "tf32" is always true."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def cores_per_process(env: Mapping[str, str], affinity: int) -> int:
    """The CPU cores this process may use for decoding and CPU encoding, out of the `affinity` it may run on.

    torchrun starts every rank with the whole node's cores, so each takes its share (affinity / ranks per
    node). srun with CPU binding already gives each task its own cores: an affinity whose share would exceed
    the node's allocation (SLURM_CPUS_ON_NODE) is taken as already divided.
    """
    ranks = ranks_per_node(env)
    node_cpus = int(env.get("SLURM_CPUS_ON_NODE") or affinity)
    if ranks > 1 and affinity * ranks <= node_cpus:
        return affinity
    return max(1, affinity // ranks)


def init_distributed(
    name: str = "auto", env: Mapping[str, str] | None = None, timeout_minutes: float | None = None
) -> torch.device:
    """This process's device, bound (`resolve_device`), and, when a launcher started several processes
        (WORLD_SIZE > 1), the process group: NCCL with `device_id` on CUDA, so the communicator is created on this
        process's GPU at once (no guessing, no "duplicate GPU"), gloo on the CPU. Idempotent. `timeout_minutes`
    bounds every collective: a rank that waits while rank 0 validates must not hit NCCL's 10-minute default."""
    env = os.environ if env is None else env
    device = resolve_device(name, env)
    world = int(env.get("WORLD_SIZE") or 1)
    if world > 1 and not dist.is_initialized():
        rank = int(env.get("RANK") or 0)
        timeout = None if timeout_minutes is None else timedelta(minutes=float(timeout_minutes))  # None: the default
        if device.type == "cuda":
            gpus, per_node = visible_gpus(), ranks_per_node(env)
            if per_node > gpus:
                raise ValueError(
                    f"{per_node} processes per node share {gpus} visible GPU(s): NCCL needs a GPU of its own for "
                    "each (start at most as many processes per node as GPUs)"
                )
            dist.init_process_group("nccl", timeout=timeout, rank=rank, world_size=world, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timeout, rank=rank, world_size=world)
    return device


def destroy_distributed() -> None:
    """Leave the process group, if there is one: NCCL warns (and may hang at exit) when it is never destroyed."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(
    name: str = "auto", env: Mapping[str, str] | None = None, timeout_minutes: float | None = None
) -> Iterator[torch.device]:
    """`with distributed(config["runtime"]["device"]) as device:` init_distributed, then destroy_distributed on
    the way out, error or not; a group that existed before (a test's, a caller's) is left alone."""
    existed = dist.is_available() and dist.is_initialized()
    device = init_distributed(name, env, timeout_minutes)
    try:
        yield device
    finally:
        if not existed:
            destroy_distributed()

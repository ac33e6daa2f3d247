"""FAISS on a GPU: what was found, where an index can run, and moving it there, each with a reason.

Nothing here falls back silently: every decision carries a one-line note, and a fallback (a GPU
asked for and not used) is flagged so the caller prints it. One GPU only, the one `runtime.device`
names (not `index_cpu_to_all_gpus`, which would copy the index to every GPU of the machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .faiss_index import FAISS_PROBLEM, GPU_PQ_BYTES, GPU_PQ_FLOAT16_ONLY, LARGE_KINDS, faiss, require_faiss

if TYPE_CHECKING:
    import torch

GPU_MAX_K = 2048  # faiss GPU k-selection limit (also nprobe's)


@dataclass(frozen=True)
class GpuStatus:
    count: int  # GPUs faiss can use
    faiss_gpu: bool  # a GPU build of faiss is installed
    note: str  # what was found, in one line


def gpu_status(faiss_module=None, torch_gpus: int | None = None) -> GpuStatus:
    """What faiss offers here. A GPU build that sees no GPU is reported, with torch's count beside it:
    torch seeing GPUs that faiss does not means the faiss wheel lacks code for this GPU or driver."""
    fa = faiss if faiss_module is None else faiss_module
    if fa is None:
        return GpuStatus(0, False, FAISS_PROBLEM or "faiss is not installed")
    if not hasattr(fa, "StandardGpuResources"):
        return GpuStatus(0, False, "faiss is the CPU build (faiss-cpu)")
    count = int(fa.get_num_gpus())
    if count:
        return GpuStatus(count, True, f"faiss-gpu sees {count} GPU(s)")
    if torch_gpus is None:
        import torch  # only here: the ONNX query engine imports this module and never torch

        torch_gpus = torch.cuda.device_count()
    why = (
        f"while torch sees {torch_gpus}: this faiss wheel has no code for this GPU or CUDA driver (README: GPU wheel)"
        if torch_gpus
        else "(no visible GPU: check CUDA_VISIBLE_DEVICES and the driver)"
    )
    return GpuStatus(0, True, f"faiss-gpu is installed but get_num_gpus() == 0 {why}")


@dataclass(frozen=True)
class Placement:
    gpu: int | None  # the GPU a faiss index runs on, or None for the CPU
    float16_luts: bool  # IVF-PQ lookup tables in float16 (needed for 56, 64 and 96-byte codes)
    note: str
    fallback: bool = False  # a GPU was wanted and is not used: print the note


def placement(kind: str, code_bytes: int, device: torch.device, use_gpu: bool, status: GpuStatus) -> Placement:
    """Where a faiss index of this kind runs, given the runtime device and what faiss offers."""
    if device.type != "cuda":
        return Placement(None, False, f"CPU (runtime device {device})")
    if not use_gpu:
        return Placement(None, False, "CPU (index.use_gpu = false)")
    gpu = device.index or 0
    if status.count == 0:
        return Placement(None, False, f"CPU: {status.note}", True)
    if gpu >= status.count:
        return Placement(None, False, f"CPU: runtime device {device}, but faiss sees {status.count} GPU(s)", True)
    if kind == "hnsw":
        return Placement(None, False, "CPU: faiss has no GPU HNSW", True)
    if kind in LARGE_KINDS:
        return Placement(None, False, "CPU: faiss has no GPU fast-scan PQ (nor HNSW coarse quantizer)", True)
    if kind == "ivf-pq":
        if code_bytes not in GPU_PQ_BYTES:
            return Placement(
                None,
                False,
                f"CPU: GPU IVF-PQ takes at most 48 bytes a code (56, 64 or 96 with float16 lookup tables), "
                f"this index has {code_bytes}; rebuild with --set index.pq_bytes=64 to search it on the GPU",
                True,
            )
        luts = code_bytes in GPU_PQ_FLOAT16_ONLY
        return Placement(gpu, luts, f"GPU {gpu}" + (" (float16 lookup tables)" if luts else ""))
    return Placement(gpu, False, f"GPU {gpu}")


def to_device(index, place: Placement):
    """(index, placement): the index on the placement's GPU, or the CPU index and a placement whose
    note says why the move failed."""
    if place.gpu is None:
        return index, place
    fa = require_faiss()
    resources = fa.StandardGpuResources()
    options = fa.GpuClonerOptions()
    options.useFloat16LookupTables = place.float16_luts
    try:
        moved = fa.index_cpu_to_gpu(resources, place.gpu, index, options)
    except RuntimeError as error:  # faiss raises C++ errors as RuntimeError
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return index, Placement(None, False, f"CPU: moving the index to GPU {place.gpu} failed: {reason}", True)
    moved.referenced_objects = [resources]  # the resources must outlive the index
    return moved, place


def check_k(k: int, on_gpu: bool) -> None:
    if on_gpu and k > GPU_MAX_K:
        raise ValueError(
            f"{k} candidates asked for (--rerank-k): faiss on the GPU returns at most {GPU_MAX_K}; ask for at most "
            f"{GPU_MAX_K}, or search on the CPU with --set index.use_gpu=false"
        )

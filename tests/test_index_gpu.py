"""FAISS on a GPU, tested without one: the import check, what GPU detection reports, where each index
kind may run and why, the GPU IVF-PQ code sizes, k-means on the runtime device's GPU, fallbacks that
say their reason, and the GPU's top-k limit."""

import builtins
import types

import numpy as np
import pytest
import torch
from test_index import index_cfg, unit, write_store

from gais_pipe.index import faiss_index, gpu
from gais_pipe.index.gpu import GpuStatus, Placement, placement
from gais_pipe.index.searchable import VideoIndex, open_index

CUDA0, CUDA1, CPU = torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cpu")
ONE_GPU = GpuStatus(1, True, "faiss-gpu sees 1 GPU(s)")


def test_two_faiss_packages_over_each_other_give_a_one_line_reason(monkeypatch):
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "faiss":
            raise AttributeError("module 'faiss' has no attribute 'IndexFlatIP'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    module, problem = faiss_index._import_faiss()
    assert module is None and "two faiss packages" in problem and "\n" not in problem


def test_gpu_detection_says_what_it_found():
    cpu_build = types.SimpleNamespace(get_num_gpus=lambda: 0)
    assert gpu.gpu_status(cpu_build) == GpuStatus(0, False, "faiss is the CPU build (faiss-cpu)")
    gpu_build = types.SimpleNamespace(get_num_gpus=lambda: 0, StandardGpuResources=object)
    blind = gpu.gpu_status(gpu_build, torch_gpus=1)
    assert blind.faiss_gpu and blind.count == 0
    assert "get_num_gpus() == 0 while torch sees 1" in blind.note
    assert "no visible GPU" in gpu.gpu_status(gpu_build, torch_gpus=0).note
    two = types.SimpleNamespace(get_num_gpus=lambda: 2, StandardGpuResources=object)
    assert gpu.gpu_status(two).count == 2


def test_placement_honours_the_runtime_device_and_says_why_not():
    assert placement("ivf-sq8", 0, CPU, True, ONE_GPU) == Placement(None, False, "CPU (runtime device cpu)")
    assert placement("ivf-sq8", 0, CUDA0, True, ONE_GPU) == Placement(0, False, "GPU 0")
    assert not placement("ivf-sq8", 0, CUDA0, False, ONE_GPU).fallback  # use_gpu = false is a choice
    blind = placement("ivf-flat", 0, CUDA0, True, GpuStatus(0, True, "faiss-gpu is installed but get_num_gpus() == 0"))
    assert blind.fallback and blind.gpu is None and "get_num_gpus() == 0" in blind.note
    assert placement("ivf-flat", 0, CUDA1, True, ONE_GPU).fallback  # cuda:1 asked, one GPU seen
    assert placement("hnsw", 0, CUDA0, True, ONE_GPU).fallback


@pytest.mark.parametrize(
    ("code", "gpu_id", "luts"), [(256, None, False), (128, None, False), (64, 0, True), (96, 0, True), (48, 0, False)]
)
def test_gpu_ivf_pq_takes_codes_up_to_48_bytes_or_64_96_with_float16_tables(code, gpu_id, luts):
    place = placement("ivf-pq", code, CUDA0, True, ONE_GPU)
    assert (place.gpu, place.float16_luts) == (gpu_id, luts)
    if gpu_id is None:
        assert place.fallback and "at most 48 bytes" in place.note and f"has {code}" in place.note


class _FakeGpuFaiss:
    """faiss as a GPU build would look, recording what it was asked; moving an index can fail."""

    def __init__(self, fail: str | None = None):
        self.fail, self.moved_to, self.options = fail, None, None

    class StandardGpuResources:
        pass

    class GpuClonerOptions:
        useFloat16LookupTables = False

    def index_cpu_to_gpu(self, resources, device, index, options):
        if self.fail:
            raise RuntimeError(f"Error in virtual void faiss::gpu::...\n{self.fail}")
        self.moved_to, self.options = device, options
        return types.SimpleNamespace(ntotal=index.ntotal)


def test_to_device_uses_the_placements_gpu_and_tables_and_never_fails_silently(monkeypatch):
    index = types.SimpleNamespace(ntotal=5)
    fake = _FakeGpuFaiss()
    monkeypatch.setattr(gpu, "require_faiss", lambda: fake)
    moved, place = gpu.to_device(index, Placement(1, True, "GPU 1 (float16 lookup tables)"))
    assert fake.moved_to == 1 and fake.options.useFloat16LookupTables and moved is not index
    fake = _FakeGpuFaiss(fail="CUDA error 209 no kernel image is available for execution on the device")
    monkeypatch.setattr(gpu, "require_faiss", lambda: fake)
    kept, place = gpu.to_device(index, Placement(0, False, "GPU 0"))
    assert kept is index and place.fallback and place.gpu is None
    assert place.note == "CPU: moving the index to GPU 0 failed: CUDA error 209 no kernel image is available for " \
        "execution on the device"  # fmt: skip


def test_k_means_runs_on_the_runtime_devices_gpu(monkeypatch):
    import faiss

    used = []

    class Fake:
        def __getattr__(self, name):
            return getattr(faiss, name)

        StandardGpuResources = object

        class GpuIndexFlatConfig:
            device = -1

        def GpuIndexFlatIP(self, resources, dim, config):  # noqa: N802 - faiss's name
            used.append(config.device)
            return faiss.IndexFlatIP(dim)

    monkeypatch.setattr(faiss_index, "require_faiss", lambda: Fake())
    vectors = unit(2000, 32)
    choice = faiss_index.Choice("ivf-pq", "", lists=16, code_bytes=8)
    index = faiss_index.new_index(choice, 32, index_cfg())
    faiss_index.train(index, vectors, gpu_device=1)
    assert used == [1] and index.is_trained and index.clustering_index is None


def test_the_gpu_top_k_limit_is_refused_clearly_and_candidates_are_capped():
    depths = []

    class Inner:
        ntotal = 10_000

        def search(self, queries, k):
            depths.append(k)
            return np.zeros((len(queries), k), np.float32), np.tile(np.arange(k), (len(queries), 1))

    vectors = unit(10_000, 8)
    on_gpu = VideoIndex(Inner(), rescore=lambda rows: vectors[rows], factor=4, max_k=2048)
    with pytest.raises(ValueError, match=r"3000 candidates .* at most 2048.*index.use_gpu=false"):
        on_gpu.search(vectors[:1], 3000)
    _, ids = on_gpu.search(vectors[:1], 1000)
    assert depths == [2048] and ids.shape == (1, 1000)  # 4 x 1000 candidates capped at the GPU's 2048
    VideoIndex(Inner(), rescore=lambda rows: vectors[rows], factor=4).search(vectors[:1], 3000)
    assert depths[-1] == 10_000  # on the CPU no cap: 12,000 wanted, all 10,000 there


def test_an_index_asked_onto_a_gpu_it_cannot_use_says_so_on_stderr(tmp_path, capsys):
    vectors = unit(3000, 16)
    store = write_store(tmp_path, vectors, segment_rows=1000)
    choice = faiss_index.Choice("ivf-flat", "", lists=8)
    index = faiss_index.new_index(choice, 16, index_cfg())
    faiss_index.train(index, vectors)
    faiss_index.add_blocks(index, store.iter_embeddings())
    faiss_index.save(index, tmp_path / "videos.faiss")
    record = {"kind": "ivf-flat", "lists": 8, "code_bytes": 0}
    searchable = open_index(tmp_path, record, store, CUDA0, index_cfg())  # faiss-cpu here: a fallback
    assert "index: CPU: faiss is the CPU build" in capsys.readouterr().err
    assert searchable.max_k is None and searchable.search(vectors[:2], 5)[1][:, 0].tolist() == [0, 1]


def test_cuda_arch_reader_finds_each_fatbinary_entry():
    import importlib.util
    import struct
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "cuda_archs.py"
    spec = importlib.util.spec_from_file_location("cuda_archs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def entry(kind: int, sm: int, payload: bytes) -> bytes:
        header = struct.pack("<HHIQ", kind, 0, 64, len(payload)) + b"\0" * 12 + struct.pack("<I", sm)
        return header + b"\0" * (64 - len(header)) + payload

    body = entry(2, 80, b"x" * 10) + entry(2, 90, b"y" * 3) + entry(1, 90, b"ptx")
    blob = b"junk" + module.MAGIC + struct.pack("<HHQ", 1, 16, len(body)) + body + b"tail"
    assert module.archs(blob) == {("elf", 80): 1, ("elf", 90): 1, ("ptx", 90): 1}
    assert module.archs(blob * 2)[("elf", 90)] == 2

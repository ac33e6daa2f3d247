"""Benchmark of indexed search at 100k to 10M videos, with text-like queries.

    .venv/bin/python benchmarks/index_bench.py --sizes 100000 1000000 --kinds flat auto ivf-flat hnsw
    .venv/bin/python benchmarks/index_bench.py --sizes 10000000 --kinds auto --no-exact-row
    .venv/bin/python benchmarks/index_bench.py --pipeline 1000000 --frames 4 --audio-dim 32
    .venv/bin/python benchmarks/index_bench.py --two-stage-videos 1000 --sizes
    .venv/bin/python benchmarks/index_bench.py --sizes 1000000 --kinds ivf-hnsw-pq4fs --threads 1 --queries 200 \
        --set '{"large_lists": 6554, "two_level_min_lists": 4096}' --nprobes 8 16 32 64 --gap-scales 0 0.5 1 \
        --refines 8 --tune                                    # 10M's density (65536 lists) emulated at 1M
    .venv/bin/python benchmarks/index_bench.py --sizes 10000000 --kinds auto --no-exact-row --queries 200 \
        --threads 2 --nprobes 64 128 256 512 --gap-scales 0 0.5 1 --refines 8 16 --tune   # auto at 10M

Index part. Per size: clustered unit vectors of the real width are generated block by block into a
float16 .npy file (the "store"; 10M x 512 is 10 GB on disk, never in memory); queries are text-like:
out of distribution, as CLIP text embeddings are for video embeddings (METHOD.md section 6: a graph
index looks fine on queries drawn from the base vectors and loses most of its recall on text). Each
query is a shared "modality" offset plus a weak pull towards one base vector and noise, so its
nearest base vectors are far from it and spread over clusters. `--query-mode base` gives the old
near-duplicate queries for comparison. Exact top-10 comes from a chunked pass over the file.
Each (size, kind) is built and searched in a fresh process, which reports: build time (train + add,
streamed from the file), its peak RSS, index size on disk, warm per-query latency p50 / p99 (one
query at a time, k = 10, re-scoring included) and recall@10 against exact search. `auto` is what
build-index picks for that size with the default config (exact_max set to 0 so that 100k shows the
approximate kind too).

Modality gap and tuning: a second set of text-like queries stands for the training captions (another
seed, the same offset). The gap (their mean minus the base's mean) is estimated from 2000 of them;
`--gap-scales` measures each IVF row with lists chosen for q - scale x gap (ranking always with q);
`--tune` runs build-index's tuning (index/probe.py) on 200 others and measures the test queries at the
tuned settings. Every row also has `batch_qps`: all test queries in one search call.
`--project-workdir W` is the second query model: W's own encoded captions (text_features.h5) against
W's videos (zero-shot embeddings) replicated to the size with `--jitter`, keeping the real modality gap.
`scann` (optional, `pip install scann`; never a project dependency) is measured beside, as a reference:
the whole base in memory, a tree of `lists` leaves, anisotropic 4-bit codes, exact re-ordering.

Pipeline part (`--pipeline N`): a workdir of N synthetic videos written straight into feature shards
(T frames, D=512 image and Da audio features in fp16), then `gais-pipe build-index` in a child
process: wall time, peak RSS, store and index size.

Two-stage part (`--two-stage-videos`): a trained synthetic collection, R@1 of stage-1 top K re-ranked
by the full score against exhaustive full scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
BLOCK = 100_000


def write_npy_blocks(path: Path, count: int, dim: int, blocks, dtype=np.float16) -> None:
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (count, dim)}
        np.lib.format.write_array_header_2_0(handle, header)
        for block in blocks:
            handle.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def clustered_blocks(count: int, dim: int, seed: int):
    """Unit vectors around count/100 random centres, in blocks (10M x 512 at once would not fit)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, count // 100), dim)).astype(np.float32)
    for start in range(0, count, BLOCK):
        n = min(count, start + BLOCK) - start
        block = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
        yield block / np.linalg.norm(block, axis=1, keepdims=True)


def text_like_queries(base: np.ndarray, count: int, seed: int, mode: str = "text") -> np.ndarray:
    rng = np.random.default_rng(seed)
    targets = base[np.sort(rng.choice(len(base), count, replace=False))].astype(np.float32)
    noise = rng.standard_normal(targets.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    if mode == "base":  # near-duplicates of base vectors: in distribution
        queries = targets + 0.1 * noise
    else:  # the modality offset dominates; cos(query, its video) is about 0.4, as for CLIP text
        gap = np.random.default_rng(12345).standard_normal(base.shape[1]).astype(np.float32)
        queries = gap / np.linalg.norm(gap) + 0.6 * targets + 0.5 * noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def exact_top(base_path: Path, queries: np.ndarray, k: int) -> np.ndarray:
    import torch

    from gais_pipe.index.store import read_npy_rows

    count = np.load(base_path, mmap_mode="r").shape[0]
    best_s = torch.full((len(queries), k), -np.inf)
    best_i = torch.zeros((len(queries), k), dtype=torch.int64)
    q = torch.from_numpy(queries)
    for start in range(0, count, BLOCK):
        block = torch.from_numpy(read_npy_rows(base_path, start, min(count, start + BLOCK)).astype(np.float32))
        scores = q @ block.T
        s, i = scores.topk(min(k, len(block)), dim=1)
        merged_s, order = torch.cat([best_s, s], 1).topk(k, dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, order)
        best_s = merged_s
    return best_i.numpy()


SCANN_PEAK_X = 6.5  # ScaNN's peak RSS over its float32 dataset: 13044 MiB at 1M x 512 (2 GB)
PHASES: dict[str, float] = {}  # build_case's train and add seconds, for the rows
TUNE_QUERIES = 200  # held-out "captions" build-index's tuning measures on (index.tune_queries)


def base_mean(base_path: Path) -> np.ndarray:
    """The mean base vector, streamed block by block."""
    total, count = None, 0
    for _, block in _blocks(base_path):
        part = block.sum(axis=0, dtype=np.float64)
        total, count = (part if total is None else total + part), count + len(block)
    return (total / max(count, 1)).astype(np.float32)


def estimate_gap(captions: np.ndarray, mean: np.ndarray) -> np.ndarray:
    from gais_pipe.index.probe import estimate_gap as estimate

    return estimate(captions, mean)


def peak_rss_mib() -> float:
    """This process's peak RSS since its exec: VmHWM (ru_maxrss would also count the parent's pages
    that a forked child shared before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_REPORT_PEAK = (
    "import atexit, sys; from pathlib import Path; "
    "atexit.register(lambda: print('peak-rss-kib', [l.split()[1] for l in Path('/proc/self/status').read_text()"
    ".splitlines() if l.startswith('VmHWM:')][0], file=sys.stderr)); "
    "sys.argv = ['gais-pipe', *sys.argv[1:]]; from gais_pipe.cli import app; app()"
)


def _blocks(base_path: Path, first: int = 0):
    from gais_pipe.index.store import read_npy_rows

    count = np.load(base_path, mmap_mode="r").shape[0]
    for start in range(first, count, 65536):
        yield start, read_npy_rows(base_path, start, min(count, start + 65536)).astype(np.float32)


def build_case(base_path: Path, kind: str, cfg: dict, gpu: bool) -> tuple:
    """(searchable inner index, choice, bytes, where it runs, its top-k cap), streamed from the file."""
    import torch

    from gais_pipe.index import faiss_index
    from gais_pipe.index.gpu import GPU_MAX_K, gpu_status, placement, to_device
    from gais_pipe.index.searchable import ExactIndex

    count, dim = np.load(base_path, mmap_mode="r").shape
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    if kind == "flat":

        class _Store:  # the base file as a store for ExactIndex
            def __len__(self):
                return count

            def iter_embeddings(self):
                return _blocks(base_path)

        return (
            ExactIndex(_Store(), device),
            faiss_index.Choice("flat", "exact"),
            count * dim * (2 if gpu else 4),
            str(device),
            None,
        )
    choice = faiss_index.choose_kind(count, dim, {**cfg, "type": kind}, gpu_present=gpu)
    inner = faiss_index.new_index(choice, dim, cfg)
    rows = faiss_index.training_rows(count, max(choice.lists, 1), cfg)
    sample = np.concatenate([b[rows[(rows >= s) & (rows < s + len(b))] - s] for s, b in _blocks(base_path)])
    started = time.perf_counter()
    faiss_index.train(inner, sample, 0 if gpu else None, cfg)
    del sample
    PHASES["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    exact, groups = faiss_index.assignment(choice.kind, cfg)
    faiss_index.add_blocks(inner, _blocks(base_path), exact=exact, groups=groups)
    PHASES["add_s"] = time.perf_counter() - started
    with tempfile.NamedTemporaryFile(dir=base_path.parent, suffix=".faiss") as tmp:
        faiss_index.save(inner, Path(tmp.name))
        size = Path(tmp.name).stat().st_size
    if not gpu:
        return inner, choice, size, "cpu", None
    inner, place = to_device(inner, placement(choice.kind, choice.code_bytes, device, True, gpu_status()))
    return inner, choice, size, place.note, (GPU_MAX_K if place.gpu is not None else None)


def run_case(base_path: Path, queries_path: Path, truth_path: Path, kind: str, overrides: dict, gpu: bool) -> list:
    """Build one index from the base file and measure it (runs in its own process). With `gpu`: exact
    search with torch on GPU 0, k-means on it, and the faiss index searched there where it can be."""
    import torch

    from gais_pipe.config import load_config
    from gais_pipe.index import faiss_index

    threads = int(overrides.pop("threads", 0) or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    if faiss_index.faiss is not None:
        faiss_index.faiss.omp_set_num_threads(threads)
    base = np.load(base_path, mmap_mode="r")
    queries, truth = np.load(queries_path), np.load(truth_path)
    sweep = overrides.pop("nprobe_sweep", None)
    bench = overrides.pop("bench", {}) or {}
    cfg = {**load_config("tiny")["index"], "exact_max": 0, **overrides}
    if kind == "scann":
        return scann_rows(base_path, queries, truth, cfg, sweep, bench)
    started = time.perf_counter()
    inner, choice, size, where, max_k = build_case(base_path, kind, cfg, gpu)
    build_s = time.perf_counter() - started
    common = {
        "videos": len(base),
        "kind": choice.kind,
        "asked": kind,
        "lists": choice.lists,
        "code_bytes": choice.code_bytes,
        "build_s": build_s,
        "build_peak_rss_mib": peak_rss_mib(),  # before any search maps pages of the base file for re-scoring
        **PHASES,
        "index_mib": size / 2**20,
        "reason": choice.reason,
        "where": where,
        "threads": threads,
    }
    refined = choice.kind in faiss_index.REFINED
    large = choice.kind in faiss_index.LARGE_KINDS
    default_refine = int(cfg["large_refine_factor" if large else "refine_factor"])
    refines = (bench.get("refines") or [default_refine]) if refined else [0]
    ivf = hasattr(inner, "nprobe")
    default_nprobe = int(cfg["large_nprobe" if large else "ivf_nprobe"])
    scales = (bench.get("gap_scales") or [0.0]) if ivf else [0.0]
    gap = np.load(base_path.parent / "gap.npy")
    rows = []
    for nprobe in (sweep if sweep and ivf else None) or [default_nprobe]:
        for scale in scales:
            for refine in refines:
                searched = _probed(inner, gap, scale, nprobe, cfg) if ivf else inner
                index = _searchable(searched, base, refine, max_k)
                rows.append({**common, **measured(index, queries, truth, nprobe if ivf else None, scale, refine)})
    if bench.get("tune") and ivf and refined:
        rows.append({**common, **tuned_row(inner, base, gap, cfg, queries, truth, max_k)})
    return rows


def _probed(inner, gap: np.ndarray, scale: float, nprobe: int, cfg: dict):
    """The IVF index probing `nprobe` lists chosen for q - scale x gap (scale 0: the plain index)."""
    from gais_pipe.index import faiss_index
    from gais_pipe.index.probe import ShiftedProbe

    faiss_index.set_probe(inner, nprobe, cfg)
    searched = ShiftedProbe(inner, gap, scale) if scale else inner
    searched.nprobe = nprobe
    return searched


def _searchable(inner, base: np.ndarray, refine: int, max_k: int | None):
    """The index as the query path searches it: `refine` x k candidates re-scored from the base file."""
    from gais_pipe.index.searchable import VideoIndex

    def rescore(rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows)
        out = np.empty((len(rows), base.shape[1]), np.float32)
        out[order] = base[rows[order]]
        return out

    return VideoIndex(inner, rescore if refine else None, max(refine, 1), max_k=max_k)


def tuned_row(inner, base: np.ndarray, gap: np.ndarray, cfg: dict, queries, truth, max_k) -> dict:
    """build-index's tuning on the held-out "captions", then the test queries at the tuned settings."""
    from gais_pipe.index import probe

    folder = Path(base.filename).parent
    held, held_truth = np.load(folder / "tune_queries.npy"), np.load(folder / "tune_truth.npy")
    started = time.perf_counter()
    tuned = probe.tune(lambda p, r: _searchable(p, base, r, max_k), inner, gap, held, held_truth, cfg)
    tune_s = time.perf_counter() - started
    index = _searchable(_probed(inner, gap, tuned.gap_scale, tuned.nprobe, cfg), base, tuned.refine_factor, max_k)
    return {
        "tuned": tuned.as_record(),
        "tune_s": tune_s,
        "tuned_line": tuned.line(),
        **measured(index, queries, truth, tuned.nprobe, tuned.gap_scale, tuned.refine_factor),
    }


def measured(index, queries: np.ndarray, truth, nprobe: int | None, scale: float, refine: int) -> dict:
    """One row's settings and what they gave: latency, batch throughput, recall, memory and the machine's load."""
    p50, p99, recall = measure(index, queries, truth)
    return {
        "nprobe": nprobe,
        "gap_scale": scale,
        "refine_factor": refine,
        "peak_rss_mib": peak_rss_mib(),
        "p50_ms": p50,
        "p99_ms": p99,
        "batch_qps": batch_qps(index, queries),
        "recall@10_vs_exact": recall,
        "load_average": os.getloadavg(),
    }


def batch_qps(index, queries: np.ndarray) -> float:
    """Queries a second with every query in one search call (faiss spreads them over its threads)."""
    started = time.perf_counter()
    index.search(queries, 10)
    return len(queries) / (time.perf_counter() - started)


def scann_rows(base_path: Path, queries: np.ndarray, truth: np.ndarray, cfg: dict, sweep, bench) -> list:
    """ScaNN as a reference (not a dependency): a tree of `large_lists` (else IVF's) leaves over the
    whole base in memory, anisotropic 4-bit codes of 2 dimensions each, exact re-ordering of refine x k."""
    try:
        import scann
    except ImportError as error:
        return [{"kind": "scann", "error": f"scann is not installed ({error}): pip install scann"}]
    count, dim = np.load(base_path, mmap_mode="r").shape
    peak_gb = SCANN_PEAK_X * count * dim * 4 / 2**30
    if peak_gb > float(bench.get("rss_limit_gb") or 8):
        why = (
            f"ScaNN would peak near {peak_gb:.1f} GB ({SCANN_PEAK_X} x the float32 base; 12.7 GB measured at 1M x 512)"
        )
        return [{"videos": count, "kind": "scann", "error": f"skipped: {why}, over --rss-limit-gb"}]
    base = np.load(base_path).astype(np.float32)  # ScaNN holds its dataset: 2 GB at 1M x 512
    leaves = int(cfg.get("large_lists") or 0) or faiss_lists(count, cfg)
    refine = (bench.get("refines") or [int(cfg["large_refine_factor"])])[0]
    started = time.perf_counter()
    builder = scann.scann_ops_pybind.builder(base, 10, "dot_product")
    tree = builder.tree(num_leaves=leaves, num_leaves_to_search=8, training_sample_size=min(count, 250_000))
    searcher = tree.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(refine * 10).build()
    build_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=base_path.parent) as saved:
        searcher.serialize(saved)
        size = sum(p.stat().st_size for p in Path(saved).iterdir())
    del base
    rows = []
    for nprobe in sweep or [int(cfg["large_nprobe"])]:

        class _Scann:
            def search(self, q: np.ndarray, k: int, leaves=nprobe):
                if len(q) == 1:
                    ids, scores = searcher.search(
                        q[0], final_num_neighbors=k, leaves_to_search=leaves, pre_reorder_num_neighbors=refine * k
                    )
                    return scores[None], np.asarray(ids, np.int64)[None]
                ids, scores = searcher.search_batched(
                    q, final_num_neighbors=k, leaves_to_search=leaves, pre_reorder_num_neighbors=refine * k
                )
                return scores, np.asarray(ids, np.int64)

        p50, p99, recall = measure(_Scann(), queries, truth)
        rows.append(
            {
                "videos": count, "kind": "scann", "asked": "scann", "lists": leaves, "nprobe": nprobe,
                "code_bytes": dim // 4, "refine_factor": refine, "gap_scale": 0.0,
                "build_s": build_s, "index_mib": size / 2**20, "peak_rss_mib": peak_rss_mib(), "p50_ms": p50,
                "p99_ms": p99, "batch_qps": batch_qps(_Scann(), queries), "recall@10_vs_exact": recall,
                "reason": "reference (ScaNN, not a dependency)", "where": "cpu", "load_average": os.getloadavg(),
            }
        )  # fmt: skip
    return rows


def faiss_lists(count: int, cfg: dict) -> int:
    from gais_pipe.index import faiss_index

    return faiss_index.large_lists(count, cfg)


def measure(index, queries: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """p50 and p99 latency (ms, one query at a time, after a warm-up) and recall@10 against exact."""
    index.search(queries[:5], 10)
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None], 10)
        times.append((time.perf_counter() - started) * 1000)
        found.append(ids[0])
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), recall


def project_data(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(videos [n, D], caption queries [m, D]) of a project workdir, zero-shot: each video's mean unit
    CLIP frame, unit length (what build-index indexes without heads), and the captions the workdir
    encoded (text_features.h5), unit length: the project's own text queries, with their real gap."""
    import h5py

    from gais_pipe.workdir import Workdir, read_features

    frames = read_features(Workdir(workdir), ["frame_features"])["frame_features"].astype(np.float32)
    frames /= np.linalg.norm(frames, axis=-1, keepdims=True)
    videos = frames.mean(axis=1)
    with h5py.File(workdir / "text_features.h5", "r") as handle:
        captions = np.asarray(handle["embedding"][()], np.float32)
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(videos), unit(captions)


def replicated_blocks(videos: np.ndarray, count: int, jitter: float, seed: int):
    """`count` jittered copies of the project's videos (copy j of video j mod n, plus noise of norm about
    `jitter`, unit length again), block by block: a large collection with the project's own geometry,
    so its text queries keep their modality gap to it."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, BLOCK):
        rows = np.arange(start, min(count, start + BLOCK))
        noise = rng.standard_normal((len(rows), videos.shape[1])).astype(np.float32) / np.sqrt(videos.shape[1])
        block = videos[rows % len(videos)] + jitter * noise
        yield block / np.linalg.norm(block, axis=1, keepdims=True)


def bench_data(args, count: int, base_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write the base file; (test queries, "training captions"): the generator's text-like queries, or
    with --project-workdir the project's encoded captions (shuffled, split) against its replicated videos."""
    if not args.project_workdir:
        write_npy_blocks(base_path, count, args.dim, clustered_blocks(count, args.dim, seed=0))
        base = np.load(base_path, mmap_mode="r")
        queries = text_like_queries(base, args.queries, seed=1, mode=args.query_mode)
        return queries, text_like_queries(base, 2000 + TUNE_QUERIES, seed=7, mode=args.query_mode)
    videos, captions = project_data(Path(args.project_workdir))
    write_npy_blocks(base_path, count, videos.shape[1], replicated_blocks(videos, count, args.jitter, seed=0))
    captions = captions[np.random.default_rng(1).permutation(len(captions))]
    if len(captions) < args.queries + TUNE_QUERIES + 2:
        raise SystemExit(f"{args.project_workdir}: {len(captions)} encoded captions, fewer than --queries + 202")
    return captions[: args.queries], captions[args.queries :]


def index_part(args) -> list[dict]:
    rows = []
    for count in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"gais-index-bench-{count}-", dir=args.tmp))
        base_path = folder / "base.npy"
        started = time.perf_counter()
        queries, captions = bench_data(args, count, base_path)  # captions: [:TUNE_QUERIES] tune, the rest the gap
        truth = exact_top(base_path, np.concatenate([queries, captions[:TUNE_QUERIES]]), 10)
        np.save(folder / "queries.npy", queries)
        np.save(folder / "truth.npy", truth[: len(queries)])
        np.save(folder / "tune_queries.npy", captions[:TUNE_QUERIES])
        np.save(folder / "tune_truth.npy", truth[len(queries) :])
        np.save(folder / "gap.npy", estimate_gap(captions[TUNE_QUERIES:], base_mean(base_path)))
        print(f"# {count}: data and exact top-10 in {time.perf_counter() - started:.0f} s", flush=True)
        kinds = [k for k in args.kinds if not (k == "flat" and args.no_exact_row)]
        for kind in kinds:
            overrides = {
                **(json.loads(args.set) if args.set else {}),
                "nprobe_sweep": args.nprobes,
                "bench": {
                    "gap_scales": args.gap_scales,
                    "refines": args.refines,
                    "tune": args.tune,
                    "rss_limit_gb": args.rss_limit_gb,
                },
                "threads": args.threads,
            }
            command = [sys.executable, __file__, "--case", str(folder), kind, json.dumps(overrides), str(int(args.gpu))]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                rows.append({**row, "queries": "project" if args.project_workdir else args.query_mode})
                print(json.dumps(rows[-1]), flush=True)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return rows


def make_pipeline_workdir(root: Path, count: int, frames: int, dim: int, audio_dim: int, shard: int) -> Path:
    """A workdir of `count` synthetic videos written straight into shards (no decoding)."""
    import h5py

    from gais_pipe.workdir import Workdir

    work = Workdir(root / "work")
    work.create()
    record = {"feature_hash": "bench", "identity": {"embed_dim": dim, "audio_dim": audio_dim}, "config_name": "tiny"}
    work.identity_path.write_text(json.dumps(record))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(10, count // 100), dim)).astype(np.float32)
    for start in range(0, count, shard):
        n = min(count, start + shard) - start
        frames_f = centres[rng.integers(0, len(centres), n)][:, None, :] + rng.standard_normal((n, frames, dim))
        path = work.features_dir / f"shard-{start:09d}-w000.h5"
        with h5py.File(path, "w") as h:
            ids = np.array([f"v{start + i:08d}.mp4" for i in range(n)], dtype=object)
            h.create_dataset("video_id", data=ids, dtype=h5py.string_dtype())
            h["frame_features"] = frames_f.astype(np.float16)
            h["audio_features"] = rng.standard_normal((n, frames, audio_dim)).astype(np.float16)
            h["audio_mask"] = np.ones((n, frames), bool)
            h["frame_times"] = np.tile(np.arange(frames, dtype=np.float32), (n, 1))
            h["duration"] = np.full(n, float(frames))
            h["file_size"] = np.arange(start, start + n)
            h["file_mtime"] = np.zeros(n)
            h.attrs["videos"] = n
        work.add_shard(path, n)
    return work.root


def pipeline_part(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="gais-pipeline-bench-", dir=args.tmp))
    started = time.perf_counter()
    work = make_pipeline_workdir(root, args.pipeline, args.frames, args.dim, args.audio_dim, 8192)
    made = time.perf_counter() - started
    shards = sum(p.stat().st_size for p in (work / "features").glob("*.h5"))
    command = [sys.executable, "-c", _REPORT_PEAK, "build-index", "-w", str(work), "--config", "tiny", "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    rss = int(done.stderr.split("peak-rss-kib")[-1].split()[0]) / 1024
    index_dir = work / "index"
    sizes = {p: p.stat().st_size for p in index_dir.rglob("*") if p.is_file()}
    result = {
        "videos": args.pipeline,
        "frames": args.frames,
        "dim": args.dim,
        "audio_dim": args.audio_dim,
        "shards_gb": shards / 1e9,
        "make_workdir_s": made,
        "build_index_s": seconds,
        "build_index_peak_rss_mib": rss,
        "store_gb": sum(s for p, s in sizes.items() if "segments" in p.parts) / 1e9,
        "faiss_mib": sum(s for p, s in sizes.items() if p.suffix == ".faiss") / 2**20,
        "output": [line for line in done.stderr.strip().splitlines() if not line.startswith("peak-rss")][-2:],
    }
    print(json.dumps(result), flush=True)
    subprocess.run(["rm", "-rf", str(root)], check=True)
    return result


def two_stage_part(videos: int, ks: list[int]) -> dict:
    import torch
    from rich.console import Console
    from synthetic_features import make_feature_workdir

    from gais_pipe.config import load_config
    from gais_pipe.retrieval.captions import load_captions
    from gais_pipe.retrieval.checkpoints import load_head
    from gais_pipe.retrieval.data import join
    from gais_pipe.retrieval.evaluate import evaluate
    from gais_pipe.retrieval.text_features import TextEncoder
    from gais_pipe.train_stage import run_train
    from gais_pipe.workdir import Workdir

    root = Path(tempfile.mkdtemp(prefix="gais-index-bench-"))
    work, captions = make_feature_workdir(root, videos=videos, splits=(0.5, 0.1, 0.4))
    config = load_config("tiny", ["train.epochs=6", "train.lr=1e-3", "train.batch_size=64"])
    result = run_train(work, captions, config, run_name="bench", console=Console(quiet=True), show_progress=False)
    model, _, _ = load_head(Workdir(work), result.run_dir / "best.safetensors", torch.device("cpu"))
    split = join(Workdir(work), load_captions(captions), TextEncoder(Workdir(work), torch.device("cpu")), False)[0][
        "test"
    ]
    out = {"test_texts": len(split), "test_videos": len(split.video_ids)}
    for k in ks:
        scores = evaluate(model, split, torch.device("cpu"), rerank_k=k)
        out["exhaustive"] = {"R@1": scores["full"]["t2v"]["R@1"], "seconds": scores["full"]["seconds"]}
        out["stage1"] = {"R@1": scores["stage1"]["t2v"]["R@1"], "seconds": scores["stage1"]["seconds"]}
        out[f"two-stage@{k}"] = {
            "R@1": scores[f"two-stage@{k}"]["t2v"]["R@1"],
            "seconds": scores[f"two-stage@{k}"]["seconds"],
        }
        print(json.dumps({k2: v for k2, v in out.items() if k2 in ("exhaustive", f"two-stage@{k}")}), flush=True)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        folder = Path(sys.argv[2])
        paths = (folder / "base.npy", folder / "queries.npy", folder / "truth.npy")
        row = run_case(*paths, sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] == "1")
        print(json.dumps(row))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["flat", "auto"],
        help="flat, auto, ivf-sq8, ivf-pq, ivf-flat, ivf-pq4fs, ivf-hnsw-pq4fs, hnsw, scann (reference, if installed)",
    )
    parser.add_argument("--set", help="index config overrides as JSON, e.g. '{\"ivf_nprobe\": 64}'")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobes", type=int, nargs="+", help="IVF: measure each of these nprobe values")
    parser.add_argument("--query-mode", choices=["text", "base"], default="text")
    parser.add_argument("--gap-scales", type=float, nargs="+", help="IVF: lists for q - scale x gap, each scale")
    parser.add_argument("--refines", type=int, nargs="+", help="re-scored kinds: measure each re-scoring depth")
    parser.add_argument("--tune", action="store_true", help="IVF: build-index's tuning on held-out captions too")
    parser.add_argument("--threads", type=int, default=0, help="faiss and torch threads per case (0: every core)")
    parser.add_argument(
        "--project-workdir", help="queries: this workdir's encoded captions; base: its videos replicated with jitter"
    )
    parser.add_argument("--rss-limit-gb", type=float, default=8.0, help="skip a reference (ScaNN) that would exceed it")
    parser.add_argument("--jitter", type=float, default=0.3, help="--project-workdir: noise norm of each replica")
    parser.add_argument("--no-exact-row", action="store_true", help="skip the exact row (10M: 20 GB of float32)")
    parser.add_argument("--pipeline", type=int, default=0, help="videos for the build-index pipeline run")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--audio-dim", type=int, default=512)
    parser.add_argument("--two-stage-videos", type=int, default=0)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--gpu", action="store_true", help="exact search, k-means and faiss search on GPU 0")
    parser.add_argument("--tmp", default=None, help="folder for the generated data (default: the system's)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    results: dict = {"threads": os.cpu_count(), "index": index_part(args) if args.sizes else []}
    if args.pipeline:
        results["pipeline"] = pipeline_part(args)
    if args.two_stage_videos:
        results["two_stage"] = two_stage_part(args.two_stage_videos, args.ks)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

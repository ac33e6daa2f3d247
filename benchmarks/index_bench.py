"""Benchmark of indexed search.

    .venv/bin/python benchmarks/index_bench.py                         # 10k, 100k, 1M videos, D=512
    .venv/bin/python benchmarks/index_bench.py --sizes 10000 --two-stage-videos 600

Part 1, synthetic clustered unit vectors of the real width: per collection size and index kind
(exact inner product, and the approximate kind `auto` picks, or --approx), build time, index bytes,
warm per-query latency p50 / p99 (one query at a time, process start excluded), and the approximate
index's recall@10 against exact search.

Part 2, a trained synthetic collection (the test suite's generator of cached features): text-to-video
R@1 of two stages (stage-1 top K re-ranked by the full score) against exhaustive full scoring, for
K = 10, 50, 100, with the time of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def clustered(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, count // 100), dim)).astype(np.float32)
    vectors = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):  # in blocks: 1M x 512 at once would double the memory
        stop = min(count, start + 100_000)
        block = centres[rng.integers(0, len(centres), stop - start)] + 0.7 * rng.standard_normal(
            (stop - start, dim)
        ).astype(np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def latency(index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times, found = [], []
    index.search(queries[:5], 10)  # warm
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None], 10)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return np.array(times) * 1000, np.array(found)


def index_part(sizes: list[int], dim: int, approx: str, queries_count: int) -> list[dict]:
    import faiss

    from gais_pipe.config import load_config
    from gais_pipe.index import faiss_index

    cfg = load_config("tiny")["index"]
    rows = []
    for count in sizes:
        vectors = clustered(count, dim, seed=0)
        queries = vectors[
            np.random.default_rng(1).choice(count, queries_count, replace=False)
        ] + 0.1 * np.random.default_rng(2).standard_normal((queries_count, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        kinds = [
            "flat",
            approx if approx != "auto" else faiss_index.choose_kind(count, dim, {**cfg, "exact_max": 0}),
        ]
        exact_ids = None
        for kind in kinds:
            started = time.perf_counter()
            index = faiss_index.build(vectors, np.arange(count), kind, cfg)
            build_s = time.perf_counter() - started
            ms, ids = latency(index, queries)
            if kind == "flat":
                exact_ids = ids
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)]))
            row = {
                "videos": count,
                "kind": kind,
                "build_s": build_s,
                "index_mib": faiss.serialize_index(index).nbytes / 2**20,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "recall@10_vs_exact": recall,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            del index
        del vectors
    return rows


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--approx",
        default="auto",
        help="approximate kind: auto (as build-index picks above exact_max), hnsw, ivf-flat, ivf-pq",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--two-stage-videos", type=int, default=1000)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    import torch

    results = {
        "threads": torch.get_num_threads(),
        "index": index_part(args.sizes, args.dim, args.approx, args.queries),
    }
    if args.two_stage_videos:
        results["two_stage"] = two_stage_part(args.two_stage_videos, args.ks)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

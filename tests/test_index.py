"""build-index, query and explain: index choice, exactness, the store, incremental adds, errors,
output formats, the explain figure, and re-ranking by the full score."""

import json
import os
import time

import numpy as np
import pytest
import torch
from conftest import extract
from media import make_video
from synthetic_features import COLOURS, SOUNDS, make_feature_workdir
from typer.testing import CliRunner

from gais_pipe.cli import app
from gais_pipe.config import load_config
from gais_pipe.index import faiss_index, layout
from gais_pipe.index.search import Searcher
from gais_pipe.index.searchable import ExactIndex, VideoIndex
from gais_pipe.index.store import RerankStore, StoreWriter
from gais_pipe.index_stage import run_build_index
from gais_pipe.retrieval.checkpoints import load_checkpoint, save_checkpoint
from gais_pipe.train_stage import run_train
from gais_pipe.workdir import Workdir, WorkdirError, read_features

runner = CliRunner()


def index_cfg(**changes) -> dict:
    return {**load_config("tiny")["index"], **changes}


def unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_auto_is_exact_then_ivf_sq8_then_ivf_pq_and_never_hnsw():
    cfg = index_cfg(exact_max=1000, memory_mb=10)
    assert faiss_index.choose_kind(1000, 512, cfg).kind == "flat"
    sq8 = faiss_index.choose_kind(20_000, 512, cfg)  # 20k x 520 B = 9.9 MiB fits 10 MiB
    assert (sq8.kind, sq8.lists) == ("ivf-sq8", 512)  # the power of two nearest 4 sqrt(20k) = 566
    assert "out of distribution" in sq8.reason and "fit --memory-mb 10" in sq8.reason
    pq = faiss_index.choose_kind(100_000, 512, cfg)  # 50 MiB of 8-bit codes do not
    assert (pq.kind, pq.code_bytes, pq.lists) == ("ivf-pq", 64, 1024)  # 100k x 72 B = 6.9 MiB fits
    assert faiss_index.choose_kind(1_000_000, 512, index_cfg()).kind == "ivf-sq8"  # 1M: 496 MiB in 4 GiB
    # a GPU present: exact search on it while the fp16 vectors fit gpu_exact_mb
    gpu = faiss_index.choose_kind(1_000_000, 512, index_cfg(), gpu_present=True)
    assert gpu.kind == "flat" and "GPU" in gpu.reason
    assert faiss_index.choose_kind(1_000_000, 512, index_cfg(gpu_exact_mb=512), gpu_present=True).kind == "ivf-sq8"
    assert faiss_index.choose_kind(10, 512, index_cfg(type="ivf-flat")).kind == "ivf-flat"
    assert faiss_index.choose_kind(5000, 512, index_cfg(type="hnsw")).kind == "hnsw"
    with pytest.raises(ValueError, match="unknown index type"):
        faiss_index.choose_kind(10, 512, index_cfg(type="annoy"))


def test_pq_codes_fit_the_budget_and_on_a_gpu_a_size_gpu_ivf_pq_takes():
    assert faiss_index.pq_code_bytes(1_000_000, 512, index_cfg(memory_mb=4096)) == 256
    assert faiss_index.pq_code_bytes(10_000_000, 512, index_cfg(memory_mb=1024)) == 64
    assert faiss_index.pq_code_bytes(1000, 96, index_cfg(pq_bytes=64)) == 48
    # GPU IVF-PQ takes at most 96 bytes a code; 96 does not divide 512, so 64 (float16 lookup tables)
    assert faiss_index.pq_code_bytes(1_000_000, 512, index_cfg(), gpu_present=True) == 64
    assert faiss_index.pq_code_bytes(1_000_000, 768, index_cfg(), gpu_present=True) == 96
    assert faiss_index.pq_code_bytes(10_000_000, 512, index_cfg(memory_mb=512), gpu_present=True) == 32


def test_exact_index_ranks_like_numpy_brute_force(tmp_path):
    vectors, queries = unit(2000, 64), unit(20, 64, seed=1)
    store = write_store(tmp_path, vectors, segment_rows=300)
    scores, ids = ExactIndex(store, torch.device("cpu")).search(queries, 10)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-5)


def text_like(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries from another distribution than the base: a shared offset plus a weak pull to a base vector."""
    rng = np.random.default_rng(seed)
    gap = unit(1, vectors.shape[1], seed=seed + 100)[0]
    queries = 1.0 * gap + 0.5 * vectors[rng.choice(len(vectors), count)] + 0.5 * unit(count, vectors.shape[1], seed)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf-flat", "ivf-sq8", pytest.param("ivf-pq", marks=pytest.mark.slow)])
def test_approximate_indexes_find_most_true_neighbours(kind, tmp_path):
    centres = unit(40, 64, seed=3)  # clustered, as embeddings of real collections are
    vectors = centres[np.arange(4000) % 40] + 0.3 * unit(4000, 64)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = text_like(vectors, 50, seed=2)
    store = write_store(tmp_path, vectors, segment_rows=1500)
    cfg = index_cfg(pq_bytes=16, ivf_nprobe=8, ivf_lists=64)
    choice = faiss_index.choose_kind(4000, 64, {**cfg, "type": kind})
    index = faiss_index.new_index(choice, 64, cfg)
    faiss_index.train(index, vectors[faiss_index.training_rows(4000, 64, cfg)])
    faiss_index.add_blocks(index, store.iter_embeddings(chunk=700))
    faiss_index.save(index, tmp_path / "i.faiss")
    loaded = faiss_index.load(tmp_path / "i.faiss")
    refined = kind in faiss_index.REFINED
    searchable = VideoIndex(loaded, rescore=store.embeddings if refined else None, factor=4 if refined else 1)
    scores, ids = searchable.search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    assert recall > (0.95 if refined else 0.8), recall
    if refined:  # re-scored candidates carry their exact scores, best first
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, vectors[ids]), rtol=1e-5)
        assert np.all(np.diff(scores, axis=1) <= 0)


def write_store(folder, vectors, segment_rows: int, chunk: int = 256) -> RerankStore:
    """A store of the given vectors (per-frame columns filled with the row number) written chunk by chunk."""
    count = len(vectors)
    writer = StoreWriter(folder / "store", count, segment_rows)
    for start in range(0, count, chunk):
        rows = np.arange(start, min(count, start + chunk))
        columns = {
            "frame_features": np.repeat(rows[:, None, None], 2, 1).repeat(3, 2).astype(np.float16),
            "audio_features": np.zeros((len(rows), 2, 1), np.float16),
            "audio_mask": np.ones((len(rows), 2), bool),
            "frame_times": np.zeros((len(rows), 2), np.float32),
        }
        metadata = [(f"v{r}", f"/videos/v{r}.mp4", 1.0, "s.h5", int(r), 10, 0.0) for r in rows]
        writer.append(columns, vectors[rows], metadata)
    writer.finish()
    return RerankStore(folder / "store")


def test_store_reads_rows_across_segments_in_the_order_asked(tmp_path):
    vectors = unit(1000, 8)
    store = write_store(tmp_path, vectors, segment_rows=300, chunk=128)
    assert [s.count for s in store.segments()] == [300, 300, 300, 100] and len(store) == 1000
    rows = np.array([999, 0, 301, 299, 300, 5])
    assert store.rows(rows)["frame_features"][:, 0, 0].tolist() == rows.tolist()
    np.testing.assert_array_equal(store.embeddings(rows), vectors[rows])
    assert store.video(301) == {
        "id": "v301", "path": "/videos/v301.mp4", "duration": 1.0, "shard": "s.h5", "row": 301, "size": 10,
        "mtime": 0.0,
    }  # fmt: skip
    assert store.find("v42") == 42 and store.find("/videos/v7.mp4") == 7 and store.find("nope") is None
    blocks = list(store.iter_embeddings(chunk=256, start_row=550))
    assert [b[0] for b in blocks] == [550, 600, 856, 900]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), vectors[550:])
    with pytest.raises(IndexError):
        store.rows(np.array([1000]))


@pytest.fixture()
def extracted(tmp_path):
    videos = tmp_path / "videos"
    for i, grey in enumerate((30, 120, 220)):
        make_video(videos / f"clip{i}.mp4", seconds=1.0, frame_value=lambda k, g=grey: g)
    extract(videos, tmp_path / "work")
    return videos, tmp_path / "work"


def current_store(work) -> RerankStore:
    return RerankStore(layout.current_generation(Workdir(work)) / "store")


def test_store_round_trip_and_incremental_add(extracted):
    videos, work = extracted
    config = load_config("tiny")
    first = run_build_index(work, config)
    assert (first["count"], first["added"], first["kind"], first["identity"]["mode"]) == (
        3,
        3,
        "flat",
        "zero-shot",
    )
    store = current_store(work)
    entries = store.videos()
    assert [e["id"] for e in entries] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    assert entries[1]["path"] == str((videos / "clip1.mp4").resolve()) and entries[1]["duration"] == pytest.approx(
        1.0, abs=0.05
    )
    stored = read_features(Workdir(work), ["frame_features", "audio_mask"])
    np.testing.assert_array_equal(store.rows(np.array([2, 0]))["frame_features"], stored["frame_features"][[2, 0]])
    first_segment = store.folder / "segments" / "seg-000000" / "frame_features.npy"

    make_video(videos / "clip3.mp4", seconds=1.0, frame_value=lambda k: 90)
    extract(videos, work)
    with pytest.raises(WorkdirError, match=r"stale \(1 videos"):
        Searcher(work, config)
    second = run_build_index(work, config)
    assert (second["count"], second["added"], second["incremental"]) == (4, 1, True)
    store = current_store(work)
    assert [e["id"] for e in store.videos()][-1] == "clip3.mp4"
    # the old segment is linked into the new generation, not rewritten
    assert (
        store.folder / "segments" / "seg-000000" / "frame_features.npy"
    ).stat().st_ino == first_segment.stat().st_ino
    assert [s.count for s in store.segments()] == [3, 1]
    assert Searcher(work, config).index.ntotal == 4
    assert run_build_index(work, config)["added"] == 0  # nothing new: the same generation stays

    os.utime(videos / "clip0.mp4", (time.time() + 5, time.time() + 5))  # a changed video: full rebuild
    extract(videos, work)
    third = run_build_index(work, config)
    assert (third["added"], third["incremental"]) == (4, False)
    generations = sorted(p.name for p in (work / "index").glob("g*"))
    assert generations == ["g000002", "g000003"]  # the current one and the one before it


def test_query_table_json_and_errors(extracted, tmp_path):
    videos, work = extracted
    result = runner.invoke(app, ["query", "grey", "-w", str(work)])
    assert result.exit_code == 2 and "no index; run `gais-pipe build-index`" in result.output
    assert runner.invoke(app, ["build-index", "-w", str(work)]).exit_code == 0
    table = runner.invoke(app, ["query", "a grey picture", "-w", str(work), "-k", "2"])
    assert table.exit_code == 0, table.output
    assert "zero-shot" in table.output and "clip" in table.output and "best moment" in table.output
    (tmp_path / "q.txt").write_text("first query\nsecond query\n")
    lines = (
        runner.invoke(app, ["query", "-w", str(work), "--queries", str(tmp_path / "q.txt"), "--json", "-k", "3"])
        .output.strip()
        .splitlines()
    )
    answers = [json.loads(line) for line in lines]
    assert [a["query"] for a in answers] == ["first query", "second query"]
    assert [h["rank"] for h in answers[0]["results"]] == [1, 2, 3]
    assert set(answers[0]["results"][0]) == {"rank", "score", "video", "path", "moment", "audio_gate"}
    scores = [h["score"] for h in answers[0]["results"]]
    assert scores == sorted(scores, reverse=True)
    assert runner.invoke(app, ["query", "  ", "-w", str(work)]).output.startswith("error: empty query")
    wrong = runner.invoke(app, ["query", "x", "-w", str(work), "--checkpoint", str(tmp_path / "q.txt")])
    assert wrong.exit_code == 2 and "built zero-shot" in wrong.output


def test_explain_shows_the_videos_own_frames_and_a_per_frame_score(extracted, tmp_path):
    import matplotlib.image

    from gais_pipe.explain_stage import explain

    _, work = extracted
    run_build_index(work, load_config("tiny"))
    searcher = Searcher(work, load_config("tiny"))
    for video, grey in (("clip0.mp4", 30), ("clip2.mp4", 220)):  # the grey levels the fixture drew
        shown = explain(searcher, "a grey picture", video)
        assert shown.video == video and shown.gates is None  # zero-shot: no gate to show
        assert shown.thumbnails.shape[0] == len(shown.times) == len(shown.attention) == 12
        assert abs(float(shown.thumbnails.mean()) - grey) < 12
        assert np.all(np.diff(shown.times) > 0) and 0 <= shown.times[0] and shown.times[-1] < 1.0
        assert np.all(np.abs(shown.attention) <= 1.0 + 1e-5)  # cosines
    out = tmp_path / "figure.png"
    result = runner.invoke(app, ["explain", "a grey picture", "clip2.mp4", "-w", str(work), "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = matplotlib.image.imread(out)[..., :3]
    assert image.shape[0] > 200 and image.shape[1] > 600
    light_grey = np.abs(image - 220 / 255).max(axis=-1) < 0.03  # the clip's frames are drawn in the figure
    assert light_grey.sum() > 12 * 500
    missing = runner.invoke(app, ["explain", "a grey picture", "nope.mp4", "-w", str(work)])
    assert missing.exit_code == 2 and "not in the index" in missing.output


@pytest.fixture(scope="module")
def trained_index(tmp_path_factory):
    from rich.console import Console

    work, captions = make_feature_workdir(tmp_path_factory.mktemp("indexed"), videos=180)
    config = load_config("tiny", ["train.epochs=30", "train.lr=1e-3", "train.batch_size=32"])
    result = run_train(work, captions, config, run_name="r", console=Console(quiet=True), show_progress=False)
    run_build_index(work, config)
    return work, config, result


def video_class(video_id: str) -> tuple[str, str]:
    """The (colour, sound) that synthetic_features gave video vNNNN: known by construction."""
    i = int(video_id[1:5])
    return COLOURS[i % len(COLOURS)], SOUNDS[(i // len(COLOURS)) % len(SOUNDS)]


def test_trained_index_finds_the_videos_a_caption_describes(trained_index):
    work, config, result = trained_index
    searcher = Searcher(work, config)
    assert searcher.record["identity"]["mode"] == "stage1"
    assert searcher.record["identity"]["checkpoint"] == str(result.run_dir / "best.safetensors")
    right = top1 = 0
    for colour, sound in [("red", "a siren"), ("blue", "rain"), ("green", "a piano"), ("yellow", "a drum")]:
        hits = searcher.search(f"a video of {colour} shapes with {sound}", k=5, rerank_k=40)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(h.audio_gate is None or 0 <= h.audio_gate <= 1 for h in hits)
        classes = [video_class(h.video) for h in hits]
        right += sum(c == (colour, sound) for c in classes)
        top1 += classes[0] == (colour, sound)
    # 36 (colour, sound) classes of 5 videos each: chance is 1 in 36 for each of the 20 answers
    assert top1 >= 3 and right >= 12, (top1, right)


def test_rerank_by_the_full_score_can_overturn_the_index_order(trained_index):
    work, config, _ = trained_index
    searcher = Searcher(work, config)
    moved = 0
    for colour, sound in [("red", "a siren"), ("blue", "rain"), ("green", "a piano")]:
        text = f"{colour} things moving while {sound} plays"
        reranked = [h.video for h in searcher.search(text, k=20, rerank_k=20)]
        _, rows = searcher.index.search(searcher.scorer.query(searcher.encode(text)), 20)
        index_order = [searcher.videos[row]["id"] for row in rows[0]]
        assert sorted(reranked) == sorted(index_order)  # the same candidates, possibly reordered
        moved += reranked != index_order
    assert moved >= 1


def test_batch_search_answers_as_one_query_at_a_time(trained_index):
    work, config, _ = trained_index
    searcher = Searcher(work, config)
    texts = ["red shapes with a siren", "blue things in the rain", "a green piano video"]
    batched = searcher.search_many(texts, k=5, rerank_k=20)
    for text, hits in zip(texts, batched):
        single = searcher.search(text, k=5, rerank_k=20)
        assert [h.video for h in hits] == [h.video for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="empty query"):
        searcher.search_many(["fine", " "], k=5, rerank_k=20)


def test_query_refuses_an_index_of_other_heads(trained_index, tmp_path):
    work, config, result = trained_index
    state, meta = load_checkpoint(result.run_dir / "best.safetensors")
    state = {name: value + 0.01 if name.endswith("bias") else value for name, value in state.items()}
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, _Weights(state), meta)  # the same heads' shape, other weights
    with pytest.raises(WorkdirError, match="build-index --checkpoint"):
        Searcher(work, config, checkpoint=other)


class _Weights(torch.nn.Module):
    """A module whose state dict is the given tensors, for writing a checkpoint of other weights."""

    def __init__(self, state: dict):
        super().__init__()
        self.tensors = state

    def state_dict(self, *args, **kwargs):
        return self.tensors


def test_build_reads_shards_in_chunks_and_fills_segments(extracted, monkeypatch):
    import gais_pipe.index_stage as stage

    _, work = extracted
    calls = []
    real = stage.read_rows

    def counting(path, rows=slice(None), names=None):
        if not isinstance(rows, slice):
            calls.append(len(rows))
        return real(path, rows, names)

    monkeypatch.setattr(stage, "read_rows", counting)
    config = load_config("tiny", ["index.build_chunk=2", "index.segment_rows=2"])
    run_build_index(work, config)
    assert calls and max(calls) <= 2  # never more than a chunk of per-frame features at once
    store = current_store(work)
    assert [s.count for s in store.segments()] == [2, 1]
    stored = read_features(Workdir(work), ["frame_features"], [v["id"] for v in store.videos()])
    np.testing.assert_array_equal(store.rows(np.arange(3))["frame_features"], stored["frame_features"])


def test_a_killed_build_leaves_the_previous_index_usable(extracted, monkeypatch):
    _, work = extracted
    config = load_config("tiny")
    run_build_index(work, config)
    before = layout.current_generation(Workdir(work))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss_index, "add_blocks", killed)
    other = load_config("tiny", ["index.type=ivf-flat"])  # same videos, another kind: the index is rebuilt
    with pytest.raises(KeyboardInterrupt):
        run_build_index(work, other)
    assert layout.current_generation(Workdir(work)) == before
    assert [p.name for p in (work / "index").glob("*.building")] == ["g000002.building"]
    hits = Searcher(work, config).search("a grey picture", k=3, rerank_k=3)
    assert len(hits) == 3
    monkeypatch.undo()
    record = run_build_index(work, other)  # the next build cleans the abandoned one up
    assert record["kind"] == "ivf-flat" and record["incremental"] and record["added"] == 0
    assert not list((work / "index").glob("*.building"))
    assert Searcher(work, other).search("a grey picture", k=2, rerank_k=3)[0].rank == 1

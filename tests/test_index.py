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
from gais_pipe.index import faiss_index
from gais_pipe.index.search import Searcher
from gais_pipe.index.store import RerankStore
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


def test_index_kind_follows_size_and_memory_budget():
    cfg = index_cfg(exact_max=1000, memory_mb=10)
    assert faiss_index.choose_kind(1000, 512, cfg) == "flat"
    assert faiss_index.choose_kind(2000, 512, cfg) == "hnsw"  # 2000 x (2 KiB + 256 B) fits 10 MiB
    assert faiss_index.choose_kind(100_000, 512, cfg) == "ivf-pq"  # 230 MiB does not
    assert faiss_index.choose_kind(10, 512, index_cfg(type="ivf-flat")) == "ivf-flat"
    with pytest.raises(ValueError, match="unknown index type"):
        faiss_index.choose_kind(10, 512, index_cfg(type="annoy"))
    # IVF-PQ codes: the largest that fits the budget, a divisor of the width
    assert faiss_index.pq_code_bytes(1_000_000, 512, index_cfg(memory_mb=4096, pq_bytes=0)) == 256
    assert faiss_index.pq_code_bytes(10_000_000, 512, index_cfg(memory_mb=1024, pq_bytes=0)) == 64
    assert faiss_index.pq_code_bytes(1000, 96, index_cfg(pq_bytes=64)) == 48


def test_exact_index_ranks_like_numpy_brute_force():
    vectors, queries = unit(2000, 64), unit(20, 64, seed=1)
    index = faiss_index.build(vectors, np.arange(2000), "flat", index_cfg())
    scores, ids = index.search(queries, 10)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf-flat", "ivf-pq"])
def test_approximate_indexes_find_most_true_neighbours(kind, tmp_path):
    centres = unit(40, 64, seed=3)  # clustered, as embeddings of real collections are
    vectors = centres[np.arange(4000) % 40] + 0.3 * unit(4000, 64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.05 * unit(50, 64, seed=2)  # near-duplicate queries
    index = faiss_index.build(vectors, np.arange(4000), kind, index_cfg(pq_bytes=32, ivf_nprobe=16))
    faiss_index.save(index, tmp_path / "i.faiss")
    _, ids = faiss_index.load(tmp_path / "i.faiss").search(queries.astype(np.float32), 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    assert recall > (0.9 if kind != "ivf-pq" else 0.5), recall
    assert (ids[:, 0] == np.arange(50)).mean() > 0.9  # the near-duplicate itself comes first


@pytest.fixture()
def extracted(tmp_path):
    videos = tmp_path / "videos"
    for i, grey in enumerate((30, 120, 220)):
        make_video(videos / f"clip{i}.mp4", seconds=1.0, frame_value=lambda k, g=grey: g)
    extract(videos, tmp_path / "work")
    return videos, tmp_path / "work"


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
    store = RerankStore(work / "index/store")
    entries = store.videos()
    assert [e["id"] for e in entries] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    assert entries[1]["path"] == str((videos / "clip1.mp4").resolve()) and entries[1]["duration"] == pytest.approx(
        1.0, abs=0.05
    )
    stored = read_features(Workdir(work), ["frame_features", "audio_mask"])
    np.testing.assert_array_equal(store.rows(np.array([2, 0]))["frame_features"], stored["frame_features"][[2, 0]])

    make_video(videos / "clip3.mp4", seconds=1.0, frame_value=lambda k: 90)
    extract(videos, work)
    with pytest.raises(WorkdirError, match="stale"):
        Searcher(work, config)
    second = run_build_index(work, config)
    assert (second["count"], second["added"], second["incremental"]) == (4, 1, True)
    assert [e["id"] for e in store.videos()][-1] == "clip3.mp4"
    assert Searcher(work, config).index.ntotal == 4

    os.utime(videos / "clip0.mp4", (time.time() + 5, time.time() + 5))  # a changed video: full rebuild
    extract(videos, work)
    third = run_build_index(work, config)
    assert (third["added"], third["incremental"]) == (4, False)


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
        with torch.no_grad():
            query = searcher.model.encode_text(torch.from_numpy(searcher.encoder.encode([text])))
        _, rows = searcher.index.search(torch.nn.functional.normalize(query, dim=-1).numpy(), 20)
        index_order = [searcher.videos[row]["id"] for row in rows[0]]
        assert sorted(reranked) == sorted(index_order)  # the same candidates, possibly reordered
        moved += reranked != index_order
    assert moved >= 1


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

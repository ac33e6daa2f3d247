"""The large-collection indexes (ivf-pq4fs, ivf-hnsw-pq4fs), lists chosen across the modality gap, and the probe tuned
at build time on held-out captions: recall against exact search on text-like queries, the shift used
only to choose lists, and the tuned figures kept in the index record."""

import json

import h5py
import numpy as np
import pytest
from synthetic_features import make_feature_workdir

from gais_pipe.config import load_config
from gais_pipe.index import faiss_index, probe
from gais_pipe.index.search import Searcher
from gais_pipe.index.searchable import VideoIndex, probe_settings
from gais_pipe.index_stage import run_build_index
from gais_pipe.workdir import Workdir

faiss = pytest.importorskip("faiss")


def index_cfg(**changes) -> dict:
    return {**load_config("tiny")["index"], **changes}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def clustered(count: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return unit(centres[rng.integers(0, clusters, count)] + 0.7 * rng.standard_normal((count, dim)))


def text_like(base: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Out-of-distribution queries: a shared modality offset, a pull to one base vector, noise."""
    rng = np.random.default_rng(seed)
    gap = unit(np.random.default_rng(99).standard_normal(base.shape[1]))
    noise = unit(rng.standard_normal((count, base.shape[1])))
    return unit(gap + 0.6 * base[rng.choice(len(base), count)] + 0.5 * noise)


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


def trained_large(base: np.ndarray, lists: int, cfg: dict, sample: np.ndarray, kind: str = faiss_index.LARGE_GRAPH):
    """An empty large-kind index (ivf-hnsw-pq4fs unless `kind`) of `lists` lists for `base`, trained on `sample`."""
    choice = faiss_index.choose_kind(len(base), base.shape[1], {**cfg, "type": kind, "large_lists": lists})
    index = faiss_index.new_index(choice, base.shape[1], cfg)
    faiss_index.train(index, sample, None, cfg)
    return choice, index


def built_large(base: np.ndarray, lists: int, cfg: dict, kind: str = faiss_index.LARGE_GRAPH):
    choice, index = trained_large(base, lists, cfg, base[faiss_index.training_rows(len(base), lists, cfg)], kind)
    faiss_index.add_blocks(index, [(0, base[: len(base) // 2]), (len(base) // 2, base[len(base) // 2 :])])
    return choice, index


def test_auto_takes_the_large_kind_above_large_min_with_a_reason():
    cfg = index_cfg()
    ten_million = faiss_index.choose_kind(10_000_000, 512, cfg)
    assert (ten_million.kind, ten_million.lists, ten_million.code_bytes) == ("ivf-pq4fs", 32768, 64)
    assert "index.large_min" in ten_million.reason and "39%" in ten_million.reason
    assert faiss_index.choose_kind(1_000_000, 512, cfg).kind == "ivf-sq8"  # 1M stays as it was measured
    assert faiss_index.large_lists(1_000_000, cfg) == 8192 and faiss_index.large_lists(1000, cfg) == 25
    assert faiss_index.pq4_subvectors(512, index_cfg(pq4_subvectors=100)) == 64  # even divisor of the width
    # the k-means sample stays within train_max_rows whatever the lists ask for
    assert len(faiss_index.training_rows(10_000_000, 65536, index_cfg(train_max_rows=5000))) == 5000


@pytest.mark.parametrize("kind,coarse", [("ivf-pq4fs", "IndexFlatIP"), ("ivf-hnsw-pq4fs", "IndexHNSWFlat")])
def test_large_kind_finds_the_true_neighbours_of_text_like_queries_and_scores_them_exactly(kind, coarse):
    base = clustered(6000, 64, 60)
    queries = text_like(base, 60, seed=1)
    cfg = index_cfg(two_level_min_lists=16, coarse_ef_search=64)  # 64 lists: trained in two levels
    choice, index = built_large(base, 64, cfg, kind)
    assert type(faiss.downcast_index(index.quantizer)).__name__ == coarse and index.nlist == 64
    faiss_index.set_probe(index, 16, cfg)
    searchable = VideoIndex(index, rescore=lambda rows: base[rows], factor=8)
    scores, ids = searchable.search(queries, 10)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    assert recall(ids, truth) > 0.9
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, base[ids]), rtol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_exact_assignment_puts_each_video_in_its_nearest_centroids_list():
    base = clustered(3000, 32, 30)
    cfg = index_cfg()
    _, index = trained_large(base, 32, cfg, base)
    graph, plain = index.quantizer, faiss.clone_index(index)
    faiss_index.add_blocks(index, [(0, base[:1700]), (1700, base[1700:])], exact=True)
    assert index.quantizer.this == graph.this  # the HNSW graph is back for searching
    centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, 32)
    nearest = np.argmax(base @ centroids.T, axis=1)
    assert [index.invlists.list_size(i) for i in range(32)] == np.bincount(nearest, minlength=32).tolist()
    faiss_index.set_probe(plain, 32, cfg)
    plain.add_with_ids(base, np.arange(3000))  # a graph of 32 centroids walked 128 wide is exact: the same index
    assert [plain.invlists.list_size(i) for i in range(32)] == np.bincount(nearest, minlength=32).tolist()
    faiss_index.set_probe(index, 32, cfg)
    expected_scores, expected = plain.search(base[:50], 5)
    scores, found = index.search(base[:50], 5)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_the_flat_coarse_kind_puts_each_video_in_its_nearest_centroids_list():
    base = clustered(3000, 32, 30)
    _, index = trained_large(base, 32, index_cfg(), base, faiss_index.LARGE)
    faiss_index.add_blocks(index, [(0, base[:1700]), (1700, base[1700:])])
    centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, 32)
    nearest = np.argmax(base @ centroids.T, axis=1)
    assert [index.invlists.list_size(i) for i in range(32)] == np.bincount(nearest, minlength=32).tolist()


def test_grouped_assignment_finds_nearly_every_nearest_list_and_gives_the_graph_back():
    base = clustered(4000, 32, 40)
    cfg = index_cfg()
    _, index = trained_large(base, 64, cfg, base)
    graph = index.quantizer
    with faiss_index.assigning_quantizer(index, groups=3) as grouped:
        assert index.quantizer.this == grouped.this and grouped.nlist == 8  # sqrt(64) groups, 3 searched
        lists = grouped.search(base, 1)[1][:, 0]
    assert index.quantizer.this == graph.this
    centroids = faiss.downcast_index(graph).reconstruct_n(0, 64)
    assert np.mean(lists == np.argmax(base @ centroids.T, axis=1)) > 0.9
    faiss_index.add_blocks(index, [(0, base)], groups=3)
    assert index.ntotal == 4000 and index.quantizer.this == graph.this


def test_the_gap_shift_chooses_lists_and_the_real_query_ranks():
    base = clustered(3000, 32, 30)
    queries = text_like(base, 20, seed=2)
    quantizer = faiss.IndexFlatIP(32)
    index = faiss.IndexIVFFlat(quantizer, 32, 32, faiss.METRIC_INNER_PRODUCT)  # exact codes: scores are q . x
    index.train(base)
    index.add(base)
    index.nprobe = 4
    gap = probe.estimate_gap(text_like(base, 500, seed=3), base.mean(axis=0))
    shifted = probe.ShiftedProbe(index, gap, 1.0)
    scores, ids = shifted.search(queries, 10)
    _, lists = quantizer.search(queries - gap, 4)  # the lists of the shifted query ...
    np.testing.assert_array_equal(shifted.lists(queries), lists)
    _, home = quantizer.search(base, 1)
    for q, query in enumerate(queries):  # ... searched with the real one: its exact top-10 within them
        members = np.nonzero(np.isin(home[:, 0], lists[q]))[0]
        best = members[np.argsort(-(base[members] @ query), kind="stable")[:10]]
        np.testing.assert_array_equal(np.sort(ids[q]), np.sort(best))
        np.testing.assert_allclose(scores[q], base[ids[q]] @ query, rtol=1e-5)
    assert not np.array_equal(lists, quantizer.search(queries, 4)[1])  # the shift did move lists
    plain = probe.ShiftedProbe(index, gap, 0.0)  # scale 0: the index's own search
    np.testing.assert_array_equal(plain.search(queries, 10)[1], index.search(queries, 10)[1])


def test_shifted_residual_codes_use_the_real_query_for_the_coarse_term():
    """Residual PQ scores add q . centroid; the shift must not leak into it (scores stay comparable)."""
    base = clustered(4000, 32, 40)
    queries = text_like(base, 10, seed=4)
    _, index = built_large(base, 32, index_cfg())
    index.nprobe = 32  # every list: the shifted and the plain search see the same candidates
    gap = probe.estimate_gap(text_like(base, 300, seed=5), base.mean(axis=0))
    shifted_scores, shifted_ids = probe.ShiftedProbe(index, gap, 1.0, 64).search(queries, 10)
    plain_scores, plain_ids = probe.ShiftedProbe(index, gap, 0.0, 64).search(queries, 10)
    np.testing.assert_array_equal(shifted_ids, plain_ids)
    np.testing.assert_allclose(shifted_scores, plain_scores, rtol=1e-5)
    index.nprobe = 512  # more lists than there are (a small collection, a large default): every list, no error
    wide_scores, wide_ids = probe.ShiftedProbe(index, gap, 1.0, 64).search(queries, 10)
    np.testing.assert_array_equal(wide_ids, plain_ids)


def test_tune_reaches_the_target_and_the_figures_round_trip():
    base = clustered(5000, 32, 50)
    held, held_truth = text_like(base, 40, seed=6), None
    held_truth = np.argsort(-(held @ base.T), axis=1)[:, :10]
    _, index = built_large(base, 64, index_cfg())
    gap = probe.estimate_gap(text_like(base, 400, seed=7), base.mean(axis=0))
    cfg = index_cfg(tune_nprobe=[2, 8, 32, 64], tune_refine=[4, 16], tune_gap_scale=[0.0, 1.0], tune_recall=0.9)
    tuned = probe.tune(lambda p, r: VideoIndex(p, lambda rows: base[rows], r), index, gap, held, held_truth, cfg)
    assert tuned.reached and tuned.recall >= 0.9 and tuned.nprobe in (2, 8, 32, 64) and tuned.queries == 40
    assert tuned.gap_scale in (0.0, 1.0) and 0 <= tuned.recall_unshifted <= 1
    again = probe.Tuned(**json.loads(json.dumps(tuned.as_record())))
    assert again == tuned and "held-out captions" in again.line()
    record = {"kind": "ivf-hnsw-pq4fs", "tuned": again.as_record()}
    assert probe_settings(record, index_cfg()) == (tuned.nprobe, tuned.refine_factor)
    assert probe_settings(record, index_cfg(use_tuned=False)) == (512, 8)  # large_nprobe, large_refine_factor
    impossible = probe.tune(
        lambda p, r: VideoIndex(p, lambda rows: base[rows], r),
        index,
        gap,
        held,
        held_truth,
        {**cfg, "tune_recall": 1.01, "tune_nprobe": [1, 2]},
    )
    assert not impossible.reached and "MISSES" in impossible.line()


def write_captions(work, vectors: np.ndarray) -> None:
    """text_features.h5 as training writes it: caption texts and their CLIP text embeddings."""
    sha = json.loads(Workdir(work).identity_path.read_text())["clip"]["sha256"]
    with h5py.File(work / "text_features.h5", "w") as handle:
        texts = np.array([f"caption {i}" for i in range(len(vectors))], dtype=object)
        handle.create_dataset("text", data=texts, dtype=h5py.string_dtype())
        handle.create_dataset("embedding", data=vectors.astype(np.float16))
        handle.attrs["clip_sha256"] = sha


def test_build_index_records_the_gap_and_tuned_probe_and_search_uses_them(tmp_path):
    work, _ = make_feature_workdir(tmp_path, videos=400, frames=4)
    config = load_config(
        "tiny",
        ["index.type=ivf-hnsw-pq4fs", "index.large_lists=8", "index.tune_queries=30", "index.tune_nprobe=[1, 2, 8]"],
    )
    record = run_build_index(work, config, zero_shot=True)
    assert "tune on" not in record["index_build"] and "no encoded captions" in record["index_build"]
    assert "tuned" not in record and "gap" not in record

    dim = json.loads(Workdir(work).identity_path.read_text())["identity"]["embed_dim"]
    videos = Searcher(work, config).store.embeddings(np.arange(400))
    rng = np.random.default_rng(0)
    offset = unit(rng.standard_normal(dim))
    write_captions(work, unit(offset + 0.8 * videos[rng.integers(0, 400, 200)] + 0.3 * rng.standard_normal((200, dim))))
    other_lists = ["index.type=ivf-hnsw-pq4fs", "index.large_lists=4", "index.tune_queries=30"]
    rebuilt = run_build_index(work, load_config("tiny", [*other_lists, "index.tune_nprobe=[1, 2, 4]"]), zero_shot=True)
    assert rebuilt["gap"]["captions"] == 170 and len(rebuilt["gap"]["vector"]) == dim
    tuned = rebuilt["tuned"]
    assert tuned["queries"] == 30 and tuned["nprobe"] in (1, 2, 4) and "tuned on 30" in rebuilt["index_build"]
    assert rebuilt["gap"]["norm"] == pytest.approx(np.linalg.norm(rebuilt["gap"]["vector"]), rel=1e-5)
    searcher = Searcher(work, load_config("tiny"))
    assert searcher.record["tuned"] == tuned  # the record on disk holds the figures
    inner = searcher.index.inner
    assert int(inner.nprobe) == tuned["nprobe"] and searcher.index.factor == tuned["refine_factor"]
    assert isinstance(inner, probe.ShiftedProbe) == (tuned["gap_scale"] != 0)
    query = unit(offset + videos[7])[None]
    scores, rows = searcher.index.search(query, 5)
    np.testing.assert_allclose(scores[0], videos[rows[0]] @ query[0], rtol=1e-5)  # exact, real-query scores
    sq8 = run_build_index(work, load_config("tiny", ["index.type=ivf-sq8", "index.ivf_lists=4"]), zero_shot=True)
    assert "gap" in sq8 and "tuned" not in sq8  # tuned kinds only (tune_kinds): 1M's IVF-SQ8 keeps its probe
    assert probe_settings(sq8, index_cfg()) == (32, 4)


def test_the_gap_and_tuning_read_only_the_checkpoints_training_captions(tmp_path):
    from gais_pipe.index_stage import _caption_queries, training_texts

    work, _ = make_feature_workdir(tmp_path, videos=40, frames=4)
    dim = json.loads(Workdir(work).identity_path.read_text())["identity"]["embed_dim"]
    write_captions(work, unit(np.random.default_rng(1).standard_normal((60, dim))))
    captions = tmp_path / "captions.jsonl"
    splits = ["train", "val", "test"]
    captions.write_text(
        "\n".join(json.dumps({"video": f"v{i}", "caption": f"caption {i}", "split": splits[i % 3]}) for i in range(60))
    )
    keep, which = training_texts({"captions": str(captions), "dataset": None})
    assert keep == {f"caption {i}" for i in range(60) if i % 3 != 2} and "train captions of" in which
    queries, source = _caption_queries(Workdir(work), None, None, dim, {"captions": str(captions), "dataset": None})
    assert queries.shape == (40, dim) and "train captions" in source  # the 20 test captions left out
    everything, source = _caption_queries(Workdir(work), None, None, dim, None)
    assert everything.shape == (60, dim) and "every split" in source  # zero-shot: no split is known
    gone, why = training_texts({"captions": str(tmp_path / "moved.jsonl"), "dataset": None})
    assert gone is None and "moved.jsonl" in why and "every split" in why

"""What makes a one-query process start fast, each held to the slow way it replaces: the text tower
alone equals open_clip's encode_text, the tokenizer equals open_clip's, a checkpoint is hashed once
per file version, staleness is told from the manifest without opening shards, the index is
memory-mapped, and the query command imports neither torch, open_clip, transformers, torchvision, h5py nor
matplotlib."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import extract, query_process
from media import make_video
from safetensors.torch import save_file

from gais_pipe.config import load_config
from gais_pipe.index import faiss_index
from gais_pipe.index import opening as opening_module
from gais_pipe.index.layout import current_generation
from gais_pipe.index.search import Searcher
from gais_pipe.index_stage import run_build_index
from gais_pipe.retrieval.clip_text import TextTower, architecture, covered, load_text_tower, simple_tokenizer
from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir import hashing as hashing_module

TEXTS = [
    "a dog barking",
    "",
    "Ünïcödé, &amp; HTML entities &lt;b&gt; and CAPS!!",
    "a much longer caption about a red circle moving from left to right while high beeps play " * 4,
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    for i, grey in enumerate((40, 200)):
        make_video(root / "videos" / f"clip{i}.mp4", seconds=1.0, frame_value=lambda k, g=grey: g)
    extract(root / "videos", root / "work")
    run_build_index(root / "work", load_config("tiny"))
    return root / "work"


@pytest.mark.parametrize(
    "text_cfg, quick_gelu",
    [
        ({"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}, False),
        ({"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 3, "mlp_ratio": 2.0}, True),
    ],
)
def test_text_tower_equals_open_clips_encode_text(text_cfg, quick_gelu):
    import open_clip

    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
    model = open_clip.model.CLIP(24, vision, text_cfg, quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        model.positional_embedding.normal_(0, 0.5)  # position matters, so cutting the padding must not change it
    tower = TextTower(text_cfg, 24, quick_gelu)
    state = {name: value for name, value in model.state_dict().items() if name in tower.state_dict()}
    tower.load_state_dict(state, strict=True)
    tokens = open_clip.get_tokenizer("ViT-B-32")(TEXTS)
    with torch.no_grad():
        expected, got = model.encode_text(tokens), tower.eval()(tokens)
        alone = torch.cat([tower(tokens[i : i + 1]) for i in range(len(TEXTS))])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=1e-5)  # each text cut to its own length


def test_tokenizer_loaded_without_open_clip_equals_open_clips():
    import open_clip

    mine = simple_tokenizer(77)
    assert torch.equal(mine(TEXTS), open_clip.get_tokenizer("ViT-B-32")(TEXTS))
    assert simple_tokenizer(32)(TEXTS).shape == (len(TEXTS), 32)


def test_the_workdirs_checkpoint_loads_as_a_text_tower_and_others_fall_back(indexed, tmp_path):
    import open_clip

    from gais_pipe.extract.clip_model import load_clip

    clip = Workdir(indexed).identity()["clip"]
    assert clip["quick_gelu"] is False
    tower, tokenizer = load_text_tower(clip["model"], clip["pretrained"], Path(clip["file"]))
    full = load_clip({"model": clip["model"], "pretrained": clip["file"]}, tmp_path)
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(tower(tokens), full.model.encode_text(tokens))
    pt_file = tmp_path / "weights.pt"  # a torch state dict, as some hubs ship them
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.model.state_dict().items()}}, pt_file)
    with torch.no_grad():
        torch.testing.assert_close(load_text_tower(clip["model"], str(pt_file), pt_file)[0](tokens), tower(tokens))
    # a pretrained tag may force QuickGELU: unknown, the whole model is built; recorded, the tower follows it
    assert load_text_tower(clip["model"], "openai", Path(clip["file"])) is None
    quick = load_text_tower(clip["model"], "openai", Path(clip["file"]), quick_gelu=True)[0]
    reference = open_clip.create_model(clip["model"], pretrained=None, force_quick_gelu=True).eval()
    open_clip.load_checkpoint(reference, clip["file"])
    with torch.no_grad():
        torch.testing.assert_close(quick(tokens), reference.encode_text(tokens))
        assert not torch.allclose(quick(tokens), tower(tokens))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert load_text_tower(clip["model"], str(garbage), garbage) is None
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in full.model.state_dict().items() if "resblocks.1." not in k}, str(partial))
    assert load_text_tower(clip["model"], str(partial), partial) is None
    assert all(covered(architecture(name)) for name in ("ViT-B-32", "ViT-B-32-quickgelu", "gais-tiny-vit"))
    uncovered = ("coca_ViT-B-32", "ViT-B-16-SigLIP", "xlm-roberta-base-ViT-B-32")
    assert not any(covered(architecture(name)) for name in uncovered)


def test_text_encoder_falls_back_to_open_clip_with_the_same_embeddings(indexed, monkeypatch):
    import gais_pipe.retrieval.text_features as text_features

    fast = text_features.TextEncoder(Workdir(indexed), torch.device("cpu")).encode(TEXTS)
    monkeypatch.setattr(text_features, "load_text_tower", lambda *args: None)
    slow = text_features.TextEncoder(Workdir(indexed), torch.device("cpu")).encode(TEXTS)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_a_checkpoint_is_hashed_once_per_file_version(tmp_path, monkeypatch):
    weights, cache = tmp_path / "w.bin", tmp_path / "hashes.json"
    weights.write_bytes(b"first weights")
    calls = []
    real = hashing_module.sha256_file
    monkeypatch.setattr(hashing_module, "sha256_file", lambda path: calls.append(path) or real(path))
    first = hashing_module.sha256_cached(weights, cache)
    assert first == real(weights) and hashing_module.sha256_cached(weights, cache) == first and len(calls) == 1
    stat = weights.stat()
    weights.write_bytes(b"other weights")  # same size, and the old mtime put back: trusted, as make does
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hashing_module.sha256_cached(weights, cache) == first and len(calls) == 1
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert hashing_module.sha256_cached(weights, cache) == real(weights) != first and len(calls) == 2
    cache.write_text("{not json")  # a broken cache is only a cache
    assert hashing_module.sha256_cached(weights, cache) == real(weights) and len(calls) == 3
    assert hashing_module.sha256_cached(weights, tmp_path / "no-such-dir" / "h.json") == real(weights)


def test_staleness_is_told_from_the_manifest_without_opening_shards(indexed, monkeypatch):
    config = load_config("tiny")
    record_path = current_generation(Workdir(indexed)) / "record.json"
    record = json.loads(record_path.read_text())
    assert record["manifest"] == Workdir(indexed).manifest_digest()
    opened = []
    real_stale = opening_module.stale_videos
    monkeypatch.setattr(opening_module, "stale_videos", lambda work, rec: opened.append(1) or real_stale(work, rec))
    Searcher(indexed, config)
    assert opened == []
    old = {k: v for k, v in record.items() if k != "manifest"}  # an index built before the record had it
    record_path.write_text(json.dumps(old))
    try:
        Searcher(indexed, config)
        assert opened == [1]  # checked the slow way (the shard lists), and fresh
        record_path.write_text(json.dumps({**record, "manifest": "from before"}))
        Searcher(indexed, config)  # the manifest differs: the shard lists compared, nothing stale found
        assert opened == [1, 1]
    finally:
        record_path.write_text(json.dumps(record))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-flat", "ivf-pq"])
def test_a_memory_mapped_index_searches_like_a_loaded_one(kind, tmp_path):
    vectors = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cfg = {**load_config("tiny")["index"], "pq_bytes": 8, "ivf_nprobe": 8}
    lists = 16 if kind.startswith("ivf") else 0
    index = faiss_index.new_index(faiss_index.Choice(kind, "test", lists, 8 if kind == "ivf-pq" else 0), 32, cfg)
    faiss_index.train(index, vectors)
    faiss_index.add_blocks(index, [(0, vectors)])
    faiss_index.save(index, tmp_path / "i.faiss")
    loaded = faiss_index.load(tmp_path / "i.faiss").search(vectors[:30], 5)
    mapped = faiss_index.load_mapped(tmp_path / "i.faiss").search(vectors[:30], 5)
    np.testing.assert_array_equal(mapped[1], loaded[1])
    np.testing.assert_allclose(mapped[0], loaded[0], rtol=1e-6)


def test_a_one_query_process_imports_only_what_it_needs(indexed):
    answer, modules = query_process(indexed, "a grey picture")
    assert answer["results"][0]["video"] in ("clip0.mp4", "clip1.mp4")
    heavy = ("torch", "open_clip", "transformers", "torchvision", "h5py", "matplotlib", "fastapi", "uvicorn")
    assert not [m for m in modules if m in heavy], [m for m in modules if m in heavy]


def test_a_stale_index_is_still_refused(indexed, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(indexed, work)
    make_video(tmp_path / "more" / "clip9.mp4", seconds=1.0, frame_value=lambda k: 90)
    extract(tmp_path / "more", work)
    with pytest.raises(WorkdirError, match="stale"):
        Searcher(work, load_config("tiny"))


@pytest.fixture(scope="module")
def headed(tmp_path_factory):
    from serving import index_with_random_heads
    from synthetic_features import make_feature_workdir

    work, _ = make_feature_workdir(tmp_path_factory.mktemp("headed"), videos=60)
    index_with_random_heads(work)
    return work


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_kept_video_states_score_as_computing_them_afresh(headed, engine):
    """One cache of prepared states for both engines (torch tensors or numpy arrays alike)."""
    from gais_pipe.index.prepared import PreparedStates

    afresh = Searcher(headed, load_config("tiny", ["query.state_cache_mb=0"]), engine=engine)
    kept = Searcher(headed, load_config("tiny"), engine=engine)
    small = Searcher(headed, load_config("tiny"), engine=engine)
    assert small.engine == engine
    one = small.scorer.prepare(small.store.rows(np.array([0])))
    row_bytes = sum(int(v[0].nbytes) for v in one if v is not None)
    small.prepared = PreparedStates(12 * row_bytes, int(small.index.ntotal))  # room for 12 videos
    texts = ["a video of red shapes with a siren", "blue things moving while rain plays", "green and a piano"]
    for text in texts * 2:
        for rerank_k in (5, 10, 40):
            expected = afresh.search_frames(text, 5, rerank_k)
            for searcher in (kept, small):
                got = searcher.search_frames(text, 5, rerank_k)
                assert [h.video for h, _ in got] == [h.video for h, _ in expected]
                for (hit, frames), (same, same_frames) in zip(got, expected):
                    assert hit.score == pytest.approx(same.score, abs=1e-5)
                    np.testing.assert_allclose(frames.attention, same_frames.attention, atol=1e-5)
    assert afresh.prepared.capacity == 0 and kept.prepared.capacity == 60 and 40 <= len(kept.prepared.slots) <= 60
    assert small.prepared.capacity == 12 and len(small.prepared.slots) <= 12  # 40 candidates: none kept for them


def test_the_query_command_exits_with_its_code_and_all_of_its_output(indexed):
    """`query` ends without the interpreter's teardown (os._exit): nothing it printed may be lost."""
    command = [sys.executable, "-m", "gais_pipe", "query"]
    done = subprocess.run([*command, "a grey picture", "-w", str(indexed), "--json", "-k", "2"], capture_output=True)
    assert done.returncode == 0 and len(json.loads(done.stdout)["results"]) == 2
    table = subprocess.run([*command, "a grey picture", "-w", str(indexed)], capture_output=True, text=True)
    assert table.returncode == 0 and table.stdout.rstrip().endswith("┘")  # the table's last line
    refused = subprocess.run([*command, "  ", "-w", str(indexed)], capture_output=True, text=True)
    assert refused.returncode == 2 and "empty query" in refused.stderr

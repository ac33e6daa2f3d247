"""The query path without torch, each part held to the torch code it mirrors: the tokenizer to
open_clip's, the numpy text tower to open_clip's encode_text, the numpy heads to GAISHead for every
variant they cover, the numpy exact index to the torch one, and `query` end to end to the torch
searcher; a one-query process on that path never imports torch, and what the mirror does not cover
goes to torch with the reason said."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import query_process

from gais_pipe.config import load_config
from gais_pipe.index.numpy_search import open_numpy_searcher, torch_free_device
from gais_pipe.index.search import Searcher
from gais_pipe.index.searchable import ExactIndex, NumpyExactIndex
from gais_pipe.index_stage import run_build_index
from gais_pipe.query_stage import open_searcher
from gais_pipe.retrieval import numpy_text
from gais_pipe.retrieval.bpe_tokenizer import ClipTokenizer
from gais_pipe.retrieval.checkpoints import save_checkpoint
from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.retrieval.numpy_heads import NumpyHeads, load_heads, unsupported
from gais_pipe.workdir import Workdir

TEXTS = [
    "a dog barking",
    "",
    "   \t\n ",
    "Ünïcödé, &amp; HTML entities &lt;b&gt; and CAPS!!",
    "it's what we'd've done -- don't you'll?",
    "日本語のテキスト 中文 한국어 ΑΒΓ Straße İstanbul",
    "emoji 🐶🔥 ½ ² ① ﬁ, mojibake Ã©tÃ©, zero\u200bwidth\u00a0space",
    "numbers 12345 3.14 1,000,000 @#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "a<end_of_text>b <START_OF_TEXT> c",
    "a much longer caption about a red circle moving from left to right while high beeps play " * 6,
]


# --- tokenizer and text tower -------------------------------------------------------------------
def test_tokenizer_equals_open_clips():
    import open_clip

    for length in (77, 16):
        expected = open_clip.tokenizer.SimpleTokenizer(context_length=length)(TEXTS).numpy()
        np.testing.assert_array_equal(ClipTokenizer(length)(TEXTS), expected)
    assert (ClipTokenizer()(TEXTS)[-1] != 0).all() and ClipTokenizer()(TEXTS)[-1, -1] == 49407  # cut at 77


@pytest.mark.parametrize(
    "text_cfg, quick_gelu",
    [
        ({"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}, False),
        ({"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 3, "mlp_ratio": 2.0}, True),
    ],
)
def test_numpy_text_tower_equals_open_clips_encode_text(text_cfg, quick_gelu, tmp_path):
    import open_clip

    from gais_pipe.retrieval.clip_text import TextTower

    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
    model = open_clip.model.CLIP(24, vision, text_cfg, quick_gelu=quick_gelu).eval()
    with torch.no_grad():  # weights large enough that the MLP's activation and the attention matter
        for name, value in model.named_parameters():
            if not name.startswith("visual."):
                value.normal_(0, 0.5 if value.ndim < 2 else value.shape[-1] ** -0.5)
    tower = TextTower(text_cfg, 24, quick_gelu)
    tower.load_state_dict({n: v for n, v in model.state_dict().items() if n in tower.state_dict()}, strict=True)
    numpy_text.export(tower, tmp_path / "t.safetensors", "ab" * 32)
    mine = numpy_text.NumpyTextTower(tmp_path / "t.safetensors", "ab" * 32)
    tokens = open_clip.get_tokenizer("ViT-B-32")(TEXTS)
    with torch.no_grad():
        expected = model.encode_text(tokens).numpy()
    got = mine(tokens.numpy())
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    alone = np.concatenate([mine(tokens[i : i + 1].numpy()) for i in range(len(TEXTS))])
    assert np.abs(alone - expected).max() <= 1e-5 * np.abs(expected).max()
    with pytest.raises(ValueError, match="not the text tower of checkpoint"):
        numpy_text.NumpyTextTower(tmp_path / "t.safetensors", "cd" * 32)  # another checkpoint's export
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert numpy_text.read_meta(tmp_path / "bad.safetensors") is None


def test_erf_gelu_equals_torchs():
    x = (np.random.default_rng(0).standard_normal(200_000) * 5).astype(np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(numpy_text.gelu(x), expected, rtol=1e-5, atol=2e-6)


# --- heads --------------------------------------------------------------------------------------
VARIANTS = [
    (gate, bilinear, pooling, audio, standardise, motion)
    for gate, bilinear in [
        ("text", "none"),
        ("text", "diagonal"),
        ("text", "lowrank"),
        ("relevance", "none"),
        ("text-free", "none"),
        ("fixed", "none"),
    ]  # fmt: skip
    for pooling in ("xpool", "mean")
    for audio in (True, False)
    for standardise in (True, False)
    for motion in ("absdiff", "none")
]


def random_heads(cfg: dict, seed: int, standardise: bool, dim=16, audio_dim=8, frames=5) -> GAISHead:
    """Heads with every parameter drawn at random (the initial ones make gates 0.5 and attention maps
    identities, which would hide mistakes), and random or identity input statistics."""
    torch.manual_seed(seed)
    model = GAISHead(dim, audio_dim, frames, cfg)
    with torch.no_grad():
        for value in model.parameters():
            value.normal_(0, 0.6 if value.ndim < 2 else value.shape[-1] ** -0.5)
        for stats in (model.frame_stats, model.audio_stats, model.text_stats):
            if standardise:
                stats.mean.normal_(0, 0.5)
                stats.std.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("gate, bilinear, pooling, audio, standardise, motion", VARIANTS)
def test_numpy_heads_score_as_gaishead(gate, bilinear, pooling, audio, standardise, motion):
    cfg = {**load_config("tiny")["model"], "gate": gate, "gate_bilinear": bilinear, "pooling": pooling}
    cfg |= {"motion": motion, "gate_frames": standardise}  # gates that read the frames, or the sound only
    cfg |= {"audio": audio, "standardise": standardise, "text_adapter": standardise}  # adapter off with stats off
    model = random_heads(cfg, seed=len(VARIANTS), standardise=standardise)
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    assert unsupported(cfg, state) is None
    mirror = NumpyHeads(state, cfg)
    rng = np.random.default_rng(1)
    text = rng.standard_normal((3, 16)).astype(np.float32)
    frames = rng.standard_normal((9, 5, 16)).astype(np.float32)
    sound = (rng.standard_normal((9, 5, 8)) * 2).astype(np.float32)
    mask = rng.random((9, 5)) < 0.7
    mask[0] = False  # a silent video
    with torch.no_grad():
        videos = VideoBatch(torch.from_numpy(frames), torch.from_numpy(sound), torch.from_numpy(mask))
        out = model(torch.from_numpy(text), videos, with_stage1=False)
        stage1 = torch.nn.functional.normalize(model.encode_text(torch.from_numpy(text)), dim=-1).numpy()
    got = mirror.score(text, mirror.prepare(frames, sound, mask))
    np.testing.assert_allclose(got.full, out.full.numpy(), atol=1e-4)
    np.testing.assert_array_equal(np.argsort(-got.full, axis=1), np.argsort(-out.full.numpy(), axis=1))
    np.testing.assert_allclose(got.gates, out.pooled.gates.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.attention, out.pooled.attention.numpy(), atol=1e-5)
    np.testing.assert_allclose(mirror.stage1_query(text), stage1, atol=1e-5)
    assert gate == "fixed" or audio is False or np.ptp(got.gates[:, 1:][:, mask[1:]]) > 0.05  # gates vary


def test_what_the_mirror_does_not_cover_is_named():
    cfg = load_config("tiny")["model"]
    names = {name for name in GAISHead(16, 8, 5, cfg).state_dict()}
    assert unsupported(cfg, names) is None
    assert "model.heads" in unsupported({**cfg, "heads": 2}, names)
    assert "model.pooling" in unsupported({**cfg, "pooling": "max"}, names)
    assert "gate_scale" in unsupported(cfg, names | {"gate_scale"})
    assert "differ from what the numpy heads mirror" in unsupported(
        {**cfg, "gate": "text", "gate_bilinear": "diagonal"}, names
    )


def test_numpy_exact_index_searches_as_the_torch_one():
    from gais_pipe.index.store import RerankStore

    class Store(RerankStore):
        def __init__(self, vectors):
            self.vectors = vectors

        def __len__(self):
            return len(self.vectors)

        def iter_embeddings(self, chunk=65536, start_row=0):
            yield 0, self.vectors

    vectors = np.random.default_rng(0).standard_normal((500, 24)).astype(np.float32)
    queries = np.random.default_rng(1).standard_normal((4, 24)).astype(np.float32)
    for k in (1, 7, 500, 900):
        expected = ExactIndex(Store(vectors), torch.device("cpu")).search(queries, k)
        got = NumpyExactIndex(Store(vectors)).search(queries, k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


def test_the_runtime_device_decides_whether_torch_is_needed(monkeypatch):
    assert torch_free_device("cpu") is None
    assert "cuda" in torch_free_device("cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert torch_free_device("auto") is None


# --- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def feature_work(tmp_path_factory):
    from synthetic_features import make_feature_workdir

    work, _ = make_feature_workdir(tmp_path_factory.mktemp("numpy-query"), videos=48)
    return work


def index_random_heads(work: Path, cfg: dict) -> Path:
    record = Workdir(work).identity()
    identity = record["identity"]
    model = random_heads(cfg, 3, True, identity["embed_dim"], identity["audio_dim"], identity["features"]["frames"])
    meta = {"config": {**load_config("tiny"), "model": cfg}, "feature_hash": record["feature_hash"]}
    path = work / "runs" / "numpy" / "best.safetensors"
    save_checkpoint(path, model, {**meta, "identity": identity, "clip_sha256": record["clip"]["sha256"]})
    run_build_index(work, load_config("tiny"), path)
    return path


QUERIES = ["a video of red shapes with a siren", "blue things moving while rain plays", "Green & a PIANO!!"]


def assert_same_answers(work: Path, config: dict):
    fast, _ = open_searcher(work, config, None, "numpy")
    slow, why = open_searcher(work, config, None, "torch")
    assert (fast.engine, slow.engine, why) == ("numpy", "torch", "--engine torch")
    for text in QUERIES:
        expected, got = slow.search_frames(text, 10, 30), fast.search_frames(text, 10, 30)
        assert [h.video for h, _ in got] == [h.video for h, _ in expected]
        for (hit, frames), (same, same_frames) in zip(got, expected):
            assert hit.score == pytest.approx(same.score, abs=1e-4) and hit.moment == same.moment
            assert (hit.audio_gate is None) == (same.audio_gate is None)
            assert hit.audio_gate is None or hit.audio_gate == pytest.approx(same.audio_gate, abs=1e-5)
            np.testing.assert_allclose(frames.attention, same_frames.attention, atol=1e-5)
            assert [g is None for g in frames.gates or []] == [g is None for g in same_frames.gates or []]


def test_query_answers_as_the_torch_path_zero_shot_and_with_each_pooling(feature_work):
    config = load_config("tiny")
    run_build_index(feature_work, config, zero_shot=True)
    assert_same_answers(feature_work, config)
    for pooling in ("xpool", "mean"):
        index_random_heads(feature_work, {**config["model"], "pooling": pooling})
        assert_same_answers(feature_work, config)
        searcher, _ = open_numpy_searcher(feature_work, config)
        for text in QUERIES * 2:  # the second time from kept states
            searcher.search(text, 5, 40)
        assert len(searcher.states.kept) >= 40


def test_the_export_is_remade_when_missing_or_stale_and_unsupported_heads_go_to_torch(feature_work):
    config = load_config("tiny")
    index_random_heads(feature_work, config["model"])
    work = Workdir(feature_work)
    export = numpy_text.export_path(work.models_dir, work.identity()["clip"]["sha256"])
    export.unlink()
    assert "no numpy export" in open_numpy_searcher(feature_work, config)[1]
    Searcher(feature_work, config)  # the torch path writes it again
    assert open_numpy_searcher(feature_work, config)[0] is not None
    meta = numpy_text.read_meta(export)
    tower = numpy_text.NumpyTextTower(export, meta["clip_sha256"])
    from safetensors.numpy import save_file

    save_file(  # an export of another checkpoint under this name: never used, and replaced
        {**tower.weights, "token_embedding.weight": np.zeros((49408, 64), np.float32)},
        str(export),
        metadata={numpy_text.META_KEY: json.dumps({**meta, "clip_sha256": "0" * 64})},
    )
    assert "no numpy export" in open_numpy_searcher(feature_work, config)[1]
    Searcher(feature_work, config)
    assert numpy_text.read_meta(export)["clip_sha256"] == work.identity()["clip"]["sha256"]
    assert open_numpy_searcher(feature_work, load_config("tiny", ["runtime.device=cuda"]))[1] == (
        "runtime.device = 'cuda'"
    )
    checkpoint = index_random_heads(feature_work, {**config["model"], "gate_heads": 2})
    assert "model.gate_heads" in load_heads(checkpoint, work.identity()["feature_hash"])[1]
    searcher, why = open_searcher(feature_work, config, None)
    assert searcher.engine == "torch" and "model.gate_heads" in why


def test_a_one_query_process_never_imports_torch(feature_work):
    config = load_config("tiny")
    index_random_heads(feature_work, config["model"])
    answer, modules = query_process(feature_work, QUERIES[0], timeout=120)
    assert answer["engine"] == "numpy" and "engine_note" not in answer
    assert not [m for m in modules if m.split(".")[0] in ("torch", "open_clip", "scipy")]
    expected = Searcher(feature_work, config).search(QUERIES[0], 10, 100)
    assert [r["video"] for r in answer["results"]] == [h.video for h in expected]
    np.testing.assert_allclose([r["score"] for r in answer["results"]], [h.score for h in expected], atol=1e-4)

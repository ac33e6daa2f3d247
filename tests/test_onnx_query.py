"""The query path through onnxruntime, each part held to the torch code it is exported from: the tokenizer to
open_clip's, the text tower's graph to open_clip's encode_text, the heads' three graphs to GAISHead for every
combination of its switches, and `query` end to end to the torch engine; an export is never used stale, what
cannot be exported goes to torch with the reason said, and a one-query process never imports torch."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import query_process

from gais_pipe.config import load_config
from gais_pipe.index.search import Searcher, open_searcher, torch_free_device
from gais_pipe.index.searchable import ExactIndex, NumpyExactIndex
from gais_pipe.index_stage import run_build_index
from gais_pipe.retrieval import exported, onnx_export
from gais_pipe.retrieval.bpe_tokenizer import ClipTokenizer, clean
from gais_pipe.retrieval.checkpoints import save_checkpoint
from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.workdir import Workdir

TEXTS = [
    "a dog barking",
    "",
    "   \t\n ",
    "Ünïcödé, &amp; HTML entities &lt;b&gt; and CAPS!!",
    "&amp;amp; double-escaped, numeric &#x1F436; &#233; and named &eacute; &hellip; entities",
    "it's what we'd've done -- don't you'll?",
    "日本語のテキスト 中文 한국어 ΑΒΓ Straße İstanbul ΟΔΟΣ",
    "emoji 🐶🔥 ½ ² ① ﬁ, mojibake Ã©tÃ©, zero\u200bwidth\u00a0space, \u201ccurly\u201d \uff21\uff22",
    "control\x1cchars\x07 and\u2028line\u2029breaks\r\nand \x1b[31mterminal escapes\x1b[0m",
    "numbers 12345 3.14 1,000,000 @#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "a<end_of_text>b <START_OF_TEXT> c <start_of_text>",
    "tabs\tand    runs   of\n\nspaces ",
    "a much longer caption about a red circle moving from left to right while high beeps play " * 6,
    "x" * 400,
]


# --- tokenizer ------------------------------------------------------------------------------------------
def test_tokenizer_equals_open_clips_token_for_token():
    import open_clip

    for length in (77, 16, 3):
        expected = open_clip.tokenizer.SimpleTokenizer(context_length=length)(TEXTS).numpy()
        np.testing.assert_array_equal(ClipTokenizer(length)(TEXTS), expected)
    ids = ClipTokenizer()(TEXTS)
    assert (ids[-2] != 0).all() and ids[-2, 0] == 49406 and ids[-2, -1] == 49407  # cut at 77, end token kept last
    assert ClipTokenizer()([]).shape == (0, 77)


def test_tokenizers_alone_cannot_clean_as_open_clip_does():
    """Why the four lines of cleaning stay in Python (bpe_tokenizer.py): the nearest `tokenizers` normalizers
    give other text where open_clip's cleaning (ftfy, html.unescape twice, whitespace, lower) does not."""
    from tokenizers import Regex, normalizers

    nearest = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    assert clean("mojibake Ã©tÃ©") == "mojibake été" != nearest.normalize_str("mojibake Ã©tÃ©")  # ftfy's repair
    assert clean("&amp;amp; &#x1F436;") == "& 🐶" != nearest.normalize_str("&amp;amp; &#x1F436;")  # html.unescape
    assert clean("½ ²") == "½ ²" != nearest.normalize_str("½ ²")  # NFKC rewrites what ftfy keeps
    assert clean("ΟΔΟΣ") == "οδος" != normalizers.Lowercase().normalize_str("ΟΔΟΣ")  # final sigma, by context
    # whitespace alone could be a normalizer: it differs from str.split() only on U+001C-U+001F, gone after ftfy
    spaces = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    odd = [c for c in map(chr, range(0x3000 + 1)) if " ".join(f"a{c}b".split()) != spaces.normalize_str(f"a{c}b")]
    assert odd == ["\x1c", "\x1d", "\x1e", "\x1f"] and all(clean(f"a{c}b") == "ab" for c in odd)


# --- text tower -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text_cfg, quick_gelu",
    [
        ({"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}, False),
        ({"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 3, "mlp_ratio": 2.0}, True),
    ],
)
def test_the_text_towers_graph_equals_open_clips_encode_text(text_cfg, quick_gelu, tmp_path):
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
    sha = "ab" * 32
    onnx_export.export_text_tower(tower.eval(), tmp_path, sha)
    encoder = exported.OnnxTextEncoder(tmp_path, sha)
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(TEXTS)).numpy()
    scale = np.abs(expected).max()
    assert np.abs(encoder.encode(TEXTS) - expected).max() <= 1e-5 * scale
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])  # each cut to its own length
    assert np.abs(alone - expected).max() <= 1e-5 * scale
    with pytest.raises(exported.NotExported, match="no ONNX export"):
        exported.OnnxTextEncoder(tmp_path, "cd" * 32)  # another checkpoint: another name, none there
    path = exported.text_path(tmp_path, sha)
    other = exported.text_path(tmp_path, "ab" * 8 + "ef" * 24)  # same name, another checkpoint inside
    assert other == path
    with pytest.raises(exported.NotExported, match="exported from another checkpoint"):
        exported.OnnxTextEncoder(tmp_path, "ab" * 8 + "ef" * 24)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07\x12\x05bogus")
    assert exported.read_meta(tmp_path / "bad.onnx") is None and exported.read_meta(tmp_path / "none.onnx") is None


# --- heads: every combination of the switches ---------------------------------------------------------------
# What GAISHead reads from model config (retrieval/heads.py) and what each changes in eval mode:
#   gate (text / relevance / text-free / fixed / match), gate_bilinear (none / diagonal / lowrank, text gate only),
#   gate_frames, pooling (xpool / mean), motion (absdiff / none), audio, text_adapter: the graphs' structure;
#   perturbation (none / isotropic / svsp), dropout: training only, never in an eval graph (cycled through below);
#   standardise (configs): whether training fits the input statistics; the heads always apply theirs, so
#   it is a matter of values (fitted statistics below; identity ones, as when not fitted, in the next test).
GATES = [("text", "none"), ("text", "diagonal"), ("text", "lowrank"), ("relevance", "none"), ("text-free", "none")]
GATES += [("fixed", "none"), ("match", "none")]
COMBINATIONS = [
    {"gate": gate, "gate_bilinear": bilinear, "gate_frames": frames, "pooling": pooling, "motion": motion}
    | {"audio": audio, "text_adapter": adapter}
    for (gate, bilinear), frames, pooling, motion, audio, adapter in itertools.product(
        GATES, (True, False), ("xpool", "mean"), ("absdiff", "none"), (True, False), (True, False)
    )
]
PERTURBATIONS = ("none", "isotropic", "svsp")
# The switches each graph reads (the rest cannot change it): a graph is exported once per combination of
# these and reused by the combinations that share it. Were a graph to depend on a switch left out here, the
# combinations reusing it would differ from torch and fail: the sharing can hide nothing.
READS = {
    "query": ("text_adapter",),
    "prepare": ("gate", "gate_bilinear", "gate_frames", "pooling", "motion", "audio"),
    "score": ("gate", "gate_bilinear", "pooling", "text_adapter"),
}
DIM, AUDIO_DIM, FRAMES = 16, 8, 5


def seeded_heads(cfg: dict, fitted: bool = True) -> GAISHead:
    """Heads with every parameter and statistic random, drawn from its own name (the same value in every
    combination that has it, so combinations may share a graph); initial values (gates at gate_init,
    identity attention maps) would hide mistakes."""
    model = GAISHead(DIM, AUDIO_DIM, FRAMES, cfg)
    with torch.no_grad():
        for name, value in [*model.named_parameters(), *model.named_buffers()]:
            if name in ("variance_updates", "text_variance") or (
                name.endswith(("_stats.mean", "_stats.std")) and not fitted
            ):
                continue
            seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
            rng = np.random.default_rng(seed)
            if name.endswith("_stats.std"):
                drawn = rng.uniform(0.5, 2.0, value.shape)
            elif name.endswith("_stats.mean"):
                drawn = rng.normal(0, 0.5, value.shape)
            else:
                drawn = rng.normal(0, 0.6 if value.ndim < 2 else value.shape[-1] ** -0.5, value.shape)
            value.copy_(torch.from_numpy(drawn.astype(np.float32)))
    return model.eval()


def inputs(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((3, DIM)).astype(np.float32)
    frames = rng.standard_normal((9, FRAMES, DIM)).astype(np.float32)
    sound = (rng.standard_normal((9, FRAMES, AUDIO_DIM)) * 2).astype(np.float32)
    mask = rng.random((9, FRAMES)) < 0.7
    mask[0] = False  # a silent video
    return text, frames, sound, mask


class Graphs:
    """The heads' ONNX graphs for each combination, exported (and checked) by onnx_export's own code, each
    graph once per combination of the switches it reads; as onnxruntime sessions."""

    def __init__(self, folder: Path):
        self.folder, self.sessions, self.exports = folder, {}, 0

    def session(self, graph: str, cfg: dict, fitted: bool):
        key = (graph, fitted, *(cfg[name] for name in READS[graph]))
        if key not in self.sessions:
            models = self.folder / str(len(self.sessions))
            path = onnx_export.export_heads(seeded_heads(cfg, fitted), models, "ab" * 32, only=graph)[0]
            self.sessions[key] = exported.session(path, threads=1)
            self.exports += 1
        return self.sessions[key]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Graphs:
    return Graphs(tmp_path_factory.mktemp("heads-graphs"))


def assert_graphs_score_as_torch(graphs: Graphs, cfg: dict, fitted: bool = True) -> None:
    model = seeded_heads(cfg, fitted)
    names = onnx_export.state_names(model)
    text, frames, sound, mask = inputs()
    with torch.no_grad():
        videos = VideoBatch(torch.from_numpy(frames), torch.from_numpy(sound), torch.from_numpy(mask))
        out = model(torch.from_numpy(text), videos, with_stage1=False)
        query = torch.nn.functional.normalize(model.encode_text(torch.from_numpy(text)), dim=-1).numpy()
    state = graphs.session("prepare", cfg, fitted).run(None, {"frames": frames, "audio": sound, "mask": mask})
    feeds = {"clip_text": text, **{f"state_{name}": value for name, value in zip(names, state)}}
    full, gates, attention = graphs.session("score", cfg, fitted).run(None, feeds)
    np.testing.assert_allclose(full, out.full.numpy(), atol=1e-4)
    np.testing.assert_array_equal(np.argsort(-full, axis=1), np.argsort(-out.full.numpy(), axis=1))  # same ranking
    np.testing.assert_allclose(gates, out.pooled.gates.numpy(), atol=1e-4)
    np.testing.assert_allclose(attention, out.pooled.attention.numpy(), atol=1e-4)
    np.testing.assert_allclose(graphs.session("query", cfg, fitted).run(None, {"clip_text": text})[0], query, atol=1e-4)
    heard = out.pooled.gates.numpy()[:, 1:][:, mask[1:]]
    assert cfg["gate"] == "fixed" or not cfg["audio"] or np.ptp(heard) > 0.05  # the gates vary: they were tested


@pytest.mark.slow  # 192 combinations, 114 distinct graphs exported: about 2.5 minutes on 2 cores
@pytest.mark.parametrize("cfg", COMBINATIONS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_the_heads_graphs_score_as_gaishead_for_every_switch_combination(graphs, cfg):
    perturbation = PERTURBATIONS[COMBINATIONS.index(cfg) % 3]  # training only: any of them, the same graphs
    assert_graphs_score_as_torch(graphs, {**load_config("tiny")["model"], **cfg, "perturbation": perturbation})


@pytest.mark.parametrize("gate", ["relevance", "text"])
def test_the_heads_graphs_score_as_gaishead_with_unfitted_statistics(graphs, gate):
    """model.standardise = false: the statistics stay the identity; the heads still apply them."""
    assert_graphs_score_as_torch(graphs, {**load_config("tiny")["model"], "gate": gate, "standardise": False}, False)


def test_an_export_that_differs_from_torch_is_refused_and_not_written(tmp_path, monkeypatch):
    cfg = load_config("tiny")["model"]
    graph = onnx_export.heads_graphs(seeded_heads(cfg))["query"]
    onnx_export._publish(graph, {"code": "x"}, tmp_path / "q.onnx", "q")  # checked against torch: the same
    other = graph._replace(module=onnx_export.QueryGraph(seeded_heads({**cfg, "text_adapter": False})))
    with pytest.raises(onnx_export.ExportError, match="the exported q differs from torch by"):
        onnx_export._check(tmp_path / "q.onnx", other, "q")
    program = onnx_export._program
    monkeypatch.setattr(onnx_export, "_program", lambda _: program(graph))  # exports one, checked against other
    with pytest.raises(onnx_export.ExportError, match="differs from torch"):
        onnx_export._publish(other, {"code": "x"}, tmp_path / "r.onnx", "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]  # nothing written, no temporary left


# --- end to end -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def feature_work(tmp_path_factory):
    from synthetic_features import make_feature_workdir

    work, _ = make_feature_workdir(tmp_path_factory.mktemp("onnx-query"), videos=48)
    return work


def index_random_heads(work: Path, cfg: dict, seed: int = 3) -> Path:
    record = Workdir(work).identity()
    identity = record["identity"]
    torch.manual_seed(seed)
    model = GAISHead(identity["embed_dim"], identity["audio_dim"], identity["features"]["frames"], cfg)
    with torch.no_grad():
        for value in model.parameters():
            value.normal_(0, 0.6 if value.ndim < 2 else value.shape[-1] ** -0.5)
    meta = {"config": {**load_config("tiny"), "model": cfg}, "feature_hash": record["feature_hash"]}
    path = work / "runs" / f"heads-{seed}" / "best.safetensors"
    save_checkpoint(path, model, {**meta, "identity": identity, "clip_sha256": record["clip"]["sha256"]})
    run_build_index(work, load_config("tiny"), path)
    return path


QUERIES = ["a video of red shapes with a siren", "blue things moving while rain plays", "Green & a PIANO!!"]


def assert_same_answers(work: Path, config: dict) -> None:
    fast, why = open_searcher(work, config, None, "onnx")
    slow, why_torch = open_searcher(work, config, None, "torch")
    assert (fast.engine, why, slow.engine, why_torch) == ("onnx", None, "torch", "--engine torch")
    for text in QUERIES:
        for _ in range(2):  # the second time from kept states
            expected, got = slow.search_frames(text, 10, 30), fast.search_frames(text, 10, 30)
            assert [h.video for h, _ in got] == [h.video for h, _ in expected]
            for (hit, frames), (same, same_frames) in zip(got, expected):
                assert hit.score == pytest.approx(same.score, abs=1e-4) and hit.moment == same.moment
                assert (hit.audio_gate is None) == (same.audio_gate is None)
                assert hit.audio_gate is None or hit.audio_gate == pytest.approx(same.audio_gate, abs=1e-4)
                np.testing.assert_allclose(frames.attention, same_frames.attention, atol=1e-4)
                assert [g is None for g in frames.gates or []] == [g is None for g in same_frames.gates or []]
    row = fast.rows_by_id[got[0][0].video]
    np.testing.assert_allclose(
        fast.score_video(QUERIES[0], row).score, slow.score_video(QUERIES[0], row).score, atol=1e-4
    )


def test_query_answers_as_the_torch_engine_zero_shot_and_with_each_pooling(feature_work):
    config = load_config("tiny")
    run_build_index(feature_work, config, zero_shot=True)
    clip = Workdir(feature_work).identity()["clip"]
    meta = exported.read_meta(exported.text_path(Workdir(feature_work).models_dir, clip["sha256"]))
    assert (meta["kind"], meta["sha256"], meta["context_length"]) == ("text", clip["sha256"], 77)
    assert_same_answers(feature_work, config)
    for pooling in ("xpool", "mean"):
        index_random_heads(feature_work, {**config["model"], "pooling": pooling})
        assert_same_answers(feature_work, config)
        searcher, _ = open_searcher(feature_work, config)
        assert searcher.engine == "onnx" and searcher.prepared is not None
        for text in QUERIES:
            searcher.search(text, 5, 40)
        assert len(searcher.prepared.slots) >= 40


def test_a_stale_or_missing_export_is_never_used_and_build_index_makes_it_again(feature_work, monkeypatch):
    config = load_config("tiny")
    checkpoint = index_random_heads(feature_work, config["model"])
    work = Workdir(feature_work)
    clip_sha = work.identity()["clip"]["sha256"]
    text_file = exported.text_path(work.models_dir, clip_sha)
    good = text_file.read_bytes()
    text_file.unlink()
    searcher, why = open_searcher(feature_work, config)
    assert searcher.engine == "torch" and "no ONNX export of the CLIP text tower" in why
    with pytest.raises(ValueError, match="--engine onnx: no ONNX export"):
        open_searcher(feature_work, config, None, "onnx")
    record = run_build_index(feature_work, config, checkpoint)  # nothing new to index: the export is made again
    assert record["index_build"] == "unchanged" and any("exported the text tower" in n for n in record["onnx"])
    assert text_file.read_bytes() == good and open_searcher(feature_work, config)[0].engine == "onnx"

    other = good.replace(clip_sha.encode(), ("0" * 64).encode())  # the same graph claiming another checkpoint
    text_file.write_bytes(other)
    assert "exported from another checkpoint" in open_searcher(feature_work, config)[1]
    heads_sha = work.sha256(checkpoint)
    monkeypatch.setitem(exported.SOURCES, "heads", ("heads.py", "standardise.py"))  # another version of the code
    exported.code_version.cache_clear()
    try:
        text_file.write_bytes(good)
        searcher, why = open_searcher(feature_work, config)
        assert searcher.engine == "torch" and "exported by another version of heads.py" in why
        assert exported.read_meta(exported.heads_path(work.models_dir, heads_sha, "score"))["sha256"] == heads_sha
    finally:
        monkeypatch.undo()
        exported.code_version.cache_clear()
    assert open_searcher(feature_work, config)[0].engine == "onnx"


def test_what_cannot_be_exported_is_answered_by_torch_and_said(feature_work, monkeypatch):
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    config = load_config("tiny")

    def refuse(head):
        raise onnx_export.ExportError("torch.onnx.export failed: a switch it cannot trace")

    monkeypatch.setattr(onnx_export, "heads_graphs", refuse)
    checkpoint = index_random_heads(feature_work, {**config["model"], "gate": "text"}, seed=5)
    work = Workdir(feature_work)
    assert exported.failure_path(work.models_dir, "heads", work.sha256(checkpoint)).is_file()
    searcher, why = open_searcher(feature_work, config)
    assert searcher.engine == "torch" and "could not be exported to ONNX at build-index" in why
    assert "a switch it cannot trace" in why
    runner = CliRunner()
    answer = json.loads(runner.invoke(app, ["query", QUERIES[0], "-w", str(feature_work), "--json"]).output)
    assert answer["engine"] == "torch" and "a switch it cannot trace" in answer["engine_note"]
    table = runner.invoke(app, ["query", QUERIES[0], "-w", str(feature_work)]).output
    assert "answered by torch: the heads' checkpoint could not be exported" in " ".join(table.split())

    monkeypatch.setattr(onnx_export, "load_text_tower", lambda *args: None)  # an architecture TextTower lacks
    text_file = exported.text_path(work.models_dir, work.identity()["clip"]["sha256"])
    text_file.unlink()
    notes = run_build_index(feature_work, config, checkpoint)["onnx"]
    assert any("is not an architecture clip_text.TextTower covers" in note for note in notes)
    searcher, why = open_searcher(feature_work, config)
    assert searcher.engine == "torch" and "CLIP text tower could not be exported to ONNX at build-index" in why
    monkeypatch.undo()
    assert any("exported the text tower" in note for note in run_build_index(feature_work, config, checkpoint)["onnx"])


def test_the_runtime_device_decides_whether_torch_is_needed(monkeypatch):
    assert torch_free_device("cpu") is None
    assert "cuda" in torch_free_device("cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert torch_free_device("auto") is None


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
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)


def test_a_one_query_process_never_imports_torch(feature_work):
    config = load_config("tiny")
    index_random_heads(feature_work, config["model"], seed=7)
    answer, modules = query_process(feature_work, QUERIES[0], timeout=120)
    assert answer["engine"] == "onnx" and "engine_note" not in answer
    assert not [m for m in modules if m.split(".")[0] in ("torch", "open_clip", "scipy", "onnx", "onnxscript")]
    expected = Searcher(feature_work, config).search(QUERIES[0], 10, 100)
    assert [r["video"] for r in answer["results"]] == [h.video for h in expected]
    np.testing.assert_allclose([r["score"] for r in answer["results"]], [h.score for h in expected], atol=1e-4)

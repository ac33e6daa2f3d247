"""Training and evaluation on synthetic cached features: learning, determinism, resume, checkpoints,
the evaluation leak, and DDP equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from synthetic_features import make_feature_workdir
from typer.testing import CliRunner

from gais_pipe.cli import app
from gais_pipe.config import load_config
from gais_pipe.eval_stage import run_eval
from gais_pipe.retrieval.captions import CaptionError
from gais_pipe.retrieval.checkpoints import load_checkpoint, load_head
from gais_pipe.retrieval.heads import VideoBatch
from gais_pipe.retrieval.metrics import text_to_video
from gais_pipe.retrieval.scoring import full_scores
from gais_pipe.train_stage import run_train
from gais_pipe.workdir import Workdir, WorkdirError

FAST = ["train.epochs=6", "train.lr=1e-3", "train.batch_size=32"]


def config(*overrides):
    return load_config("tiny", [*FAST, *overrides])


def train(work, captions, *overrides, run="run", **kwargs):
    return run_train(
        work,
        captions,
        config(*overrides),
        run_name=run,
        console=Console(quiet=True),
        show_progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_feature_workdir(tmp_path_factory.mktemp("synthetic"), videos=180)


@pytest.fixture(scope="module")
def trained(synthetic):
    work, captions = synthetic
    return train(work, captions, run="trained")


def test_training_lowers_the_loss_and_beats_chance_by_far(synthetic, trained):
    work, _ = synthetic
    losses = [h["train_loss"] for h in trained.history]
    assert losses[-1] < 0.9 * losses[0]
    results = run_eval(work, config(), "test", checkpoint=trained.run_dir / "best.safetensors", rerank_k=10, dsl=True)
    # Captions name a colour and a sound, 36 combinations: a few test videos share each caption's
    # meaning, so R@1 is bounded well below 100; chance is 1 / videos.
    videos = results["videos"]
    t2v = results["full"]["t2v"]
    assert t2v["R@1"] > 3 * 100 / videos and t2v["R@10"] > 2.5 * 1000 / videos
    assert t2v["MdR"] < videos / 4 and results["full"]["v2t"]["MdR"] < videos / 4  # chance: about videos / 2
    assert {"stage1", "two-stage@10", "full+DSL"} <= set(results)
    saved = json.loads((trained.run_dir / "eval-test.json").read_text())
    assert saved["full"]["t2v"] == results["full"]["t2v"]
    assert (trained.run_dir / "curves.png").stat().st_size > 1000
    assert len((trained.run_dir / "metrics.jsonl").read_text().splitlines()) == 6


def test_the_best_checkpoint_is_chosen_on_validation(trained):
    history = trained.history
    best = max(history, key=lambda h: h["val_score"])  # the highest val MRR, ties to the widest val margin
    assert trained.best_epoch == best["epoch"] and best["val_score"][0] == max(h["val_t2v_MRR"] for h in history)
    assert best["val_score"][1] == max(h["val_t2v_margin"] for h in history if h["val_t2v_MRR"] == best["val_t2v_MRR"])
    _, meta = load_checkpoint(trained.run_dir / "best.safetensors")
    assert meta["epoch"] == trained.best_epoch and meta["val"]["split"] == "val"


def test_checkpoint_round_trip_carries_config_and_feature_identity(synthetic, trained):
    work, _ = synthetic
    state, meta = load_checkpoint(trained.run_dir / "best.safetensors")
    assert meta["feature_hash"] == Workdir(work).identity()["feature_hash"]
    assert meta["config"]["model"]["perturbation"] == "svsp" and meta["config"]["train"]["epochs"] == 6
    model, _, _ = load_head(Workdir(work), trained.run_dir / "best.safetensors", torch.device("cpu"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name])
    training_state = torch.load(trained.run_dir / "training_state.pt", weights_only=True)
    assert training_state["epoch"] == 5


def test_standardisation_is_fitted_on_train_stored_and_applied_identically(synthetic, trained):
    """Eval, index (stage 1) and query (text) all go through the checkpoint's statistics: the loaded
    head on raw features equals a head without statistics on hand-standardised features."""
    from gais_pipe.retrieval.data import caption_splits
    from gais_pipe.retrieval.heads import GAISHead
    from gais_pipe.retrieval.text_features import TextEncoder

    work, captions = synthetic
    model, meta, _ = load_head(Workdir(work), trained.run_dir / "best.safetensors", torch.device("cpu"))
    splits, _ = caption_splits(
        Workdir(work), captions, None, meta["config"]["train"], TextEncoder(Workdir(work), torch.device("cpu")), False
    )
    train_frames = splits["train"].videos.frames.float()
    torch.testing.assert_close(model.frame_stats.mean, train_frames.reshape(-1, train_frames.shape[-1]).mean(0))
    heard = splits["train"].videos.audio.float()[splits["train"].videos.mask]
    torch.testing.assert_close(model.audio_stats.mean, heard.mean(0), atol=1e-4, rtol=1e-4)
    assert float(model.text_stats.std.min()) > 0 and not torch.all(model.text_stats.std == 1)

    bare = GAISHead.for_features(meta["identity"], meta["config"]["model"])
    state = {k: v for k, v in model.state_dict().items() if not k.split(".")[0].endswith("_stats")}
    bare.load_state_dict(state, strict=False)
    bare.eval()
    test = splits["test"]
    raw = test.videos
    by_hand = VideoBatch(
        (raw.frames.float() - model.frame_stats.mean) / model.frame_stats.std,
        (raw.audio.float() - model.audio_stats.mean) / model.audio_stats.std,
        raw.mask,
    )
    texts = test.text_features.float()
    hand_texts = (texts - model.text_stats.mean) / model.text_stats.std
    np.testing.assert_allclose(full_scores(model, texts, raw), full_scores(bare, hand_texts, by_hand), atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.stage1(raw), bare.stage1(by_hand))  # build-index's vectors
        torch.testing.assert_close(model.encode_text(texts), bare.encode_text(hand_texts))  # the query's


def test_same_seed_same_numbers_and_resume_after_an_interruption(synthetic, trained, monkeypatch):
    work, captions = synthetic
    again = train(work, captions, run="again")
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in trained.history]
    assert [h["val_t2v_R@1"] for h in again.history] == [h["val_t2v_R@1"] for h in trained.history]

    import gais_pipe.train_stage as stage

    real_evaluate, calls = stage.evaluate, []

    def interrupted(*args, **kwargs):  # the process dies during epoch 2's validation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(stage, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(work, captions, run="resumed")
    monkeypatch.setattr(stage, "evaluate", real_evaluate)
    resumed = train(work, captions, run="resumed")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in trained.history]
    assert resumed.best_val_r1 == trained.best_val_r1
    # the best epoch comes back from the saved state as the int it was (a float would print "epoch 3.0")
    assert resumed.best_epoch == trained.best_epoch and type(resumed.best_epoch) is int
    with pytest.raises(WorkdirError, match="another config"):
        train(work, captions, "model.gate='fixed'", run="resumed")


class QueryDominatedHead(torch.nn.Module):
    """An extreme text-conditioned pooling, v_hat(t) = mean frame + 3 t: what the query says leaks
    into the video vector, as it does (less extremely) in X-Pool-style heads."""

    def prepare(self, videos):
        return videos

    def pool(self, text, videos):
        return videos.frames.mean(dim=1).unsqueeze(0) + 3 * text.unsqueeze(1)  # [N, M, D]

    def forward(self, text, videos, with_stage1=False):
        full = torch.nn.functional.cosine_similarity(text.unsqueeze(1), self.pool(text, videos), dim=-1)
        return type("Scores", (), {"full": full})()


def test_the_leaky_evaluation_is_caught():
    """Pooling candidate i with its own caption (the T-MASS evaluation bug) gives visibly different,
    inflated numbers; the scorer used by eval sees only the queries and cannot do it."""
    generator = torch.Generator().manual_seed(0)
    videos = VideoBatch(
        torch.randn(40, 12, 32, generator=generator),
        torch.zeros(40, 12, 8),
        torch.zeros(40, 12, dtype=torch.bool),
    )
    caption_video = np.repeat(np.arange(40), 3)  # 120 texts, 40 videos: unequal counts
    # Paraphrases of one video sit close together in text space; text and video agree only weakly.
    centres = 0.5 * videos.frames.mean(dim=1) + torch.randn(40, 32, generator=generator)
    texts = centres[caption_video] + 0.2 * torch.randn(120, 32, generator=generator)
    head = QueryDominatedHead()

    right = text_to_video(full_scores(head, texts, videos), caption_video)
    own = texts[[int(np.flatnonzero(caption_video == i)[0]) for i in range(40)]]
    leaked_video = torch.stack(
        [
            head.pool(
                own[i : i + 1],
                VideoBatch(videos.frames[i : i + 1], videos.audio[i : i + 1], videos.mask[i : i + 1]),
            )[0, 0]
            for i in range(40)
        ]
    )
    leaky = text_to_video(
        torch.nn.functional.cosine_similarity(texts.unsqueeze(1), leaked_video.unsqueeze(0), dim=-1).numpy(),
        caption_video,
    )
    assert leaky["R@1"] > right["R@1"] + 20.0, (leaky, right)
    with pytest.raises(ValueError, match="do not match"):  # one caption per video assumed: refused
        text_to_video(full_scores(head, texts[:40], videos), caption_video)


def test_missing_videos_are_reported_and_skipped_only_when_allowed(synthetic, tmp_path):
    work, captions = synthetic
    extra = tmp_path / "captions.jsonl"
    extra.write_text(
        captions.read_text() + json.dumps({"video": "not-extracted.mp4", "caption": "x", "split": "train"}) + "\n"
    )
    with pytest.raises(CaptionError, match="1 annotated videos are not extracted .*not-extracted.mp4"):
        train(work, extra, "train.epochs=1", run="missing")
    assert train(work, extra, "train.epochs=1", run="missing", allow_missing=True).best_epoch == 1


def test_text_features_must_come_from_the_frames_clip(synthetic, tmp_path):
    work, captions = synthetic
    record = json.loads((work / "workdir.json").read_text())
    other = tmp_path / "work"
    import shutil

    shutil.copytree(work, other)
    record["clip"]["sha256"] = "0" * 64
    (other / "workdir.json").write_text(json.dumps(record))
    with pytest.raises(WorkdirError, match="sha256 differs"):
        train(other, captions, run="x")


def test_cli_train_then_eval(synthetic):
    work, captions = synthetic
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            "-w",
            str(work),
            "--captions",
            str(captions),
            "--quiet",
            "--run-name",
            "cli",
            *sum((["--set", o] for o in [*FAST, "train.epochs=1"]), []),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best: epoch 1," in result.output  # an int, not "epoch 1.0"
    result = runner.invoke(
        app,
        ["eval", "-w", str(work), "--checkpoint", str(work / "runs/cli/best.safetensors"), "--rerank-k", "5"],
    )
    assert result.exit_code == 0, result.output
    for expected in ("full", "stage1", "two-stage@5", "t2v", "v2t", "R@1"):
        assert expected in result.output
    result = runner.invoke(app, ["eval", "-w", str(work), "--checkpoint", str(work / "nope.safetensors")])
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_problem(perturbation: str = "none"):
    from gais_pipe.retrieval.heads import GAISHead

    cfg = load_config("tiny", ["model.dropout=0.0", f"model.perturbation='{perturbation}'", "loss.support_weight=0.5"])
    torch.manual_seed(0)
    model = GAISHead(16, 8, 5, cfg["model"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    g = torch.Generator().manual_seed(0)
    videos = VideoBatch(
        torch.randn(8, 5, 16, generator=g),
        torch.randn(8, 5, 8, generator=g),
        torch.rand(8, 5, generator=g) > 0.3,
    )
    return cfg, model, torch.randn(8, 16, generator=g), videos


def _ddp_gradients(rank: int, port: int, out: str, perturbation: str) -> None:
    import torch.distributed as dist

    from gais_pipe.train_stage import average_gradients, batch_loss, batch_noise

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(100 + rank)  # ranks' own RNGs differ, as they do under torchrun
    cfg, model, texts, videos = _tiny_problem(perturbation)
    loss, _ = batch_loss(model, texts, videos, cfg, rank, 2, batch_noise(model, len(texts), 0, 3, 7))
    loss.backward()
    average_gradients(model, 2)
    if rank == 0:
        torch.save({"loss": loss.detach(), **{k: p.grad for k, p in model.named_parameters()}}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("perturbation", ["none", "svsp"])
def test_two_gloo_processes_give_the_gradients_of_one_process_with_the_same_global_batch(tmp_path, perturbation):
    """With the perturbation on too: each rank perturbs its rows with its rows of one draw for the global
    batch, so two processes see exactly the noise that one process sees (not one draw tiled twice)."""
    from gais_pipe.train_stage import batch_loss, batch_noise

    cfg, model, texts, videos = _tiny_problem(perturbation)
    eps = batch_noise(model, len(texts), 0, 3, 7)
    assert (eps is None) == (perturbation == "none")
    if eps is not None:
        assert not torch.allclose(eps[:4], eps[4:])  # the two ranks' rows are different noise
    loss, _ = batch_loss(model, texts, videos, cfg, eps=eps)
    loss.backward()
    out = str(tmp_path / "grads.pt")
    torch.multiprocessing.spawn(_ddp_gradients, args=(_free_port(), out, perturbation), nprocs=2)
    ddp = torch.load(out, weights_only=True)
    torch.testing.assert_close(ddp["loss"], loss.detach())
    for name, parameter in model.named_parameters():
        expected = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        torch.testing.assert_close(ddp[name], expected, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_torchrun_training_follows_the_single_process_run(synthetic):
    """End to end under torchrun (2 CPU processes, gloo). Adam turns float noise in gradients that
    are zero in exact arithmetic into whole steps, so weights drift apart a little; the training
    curve must not."""
    work, captions = synthetic
    # audio drop off too: the batch is rounded to a multiple of the processes, so each batch's random drops differ
    # from the single run's, and a silent clip changes the match loss's value (1.0% apart after one epoch with it,
    # 0.1% without)
    deterministic = ["train.epochs=2", "model.dropout=0.0", "model.perturbation='none'", "train.audio_drop=0.0"]
    single = train(work, captions, *deterministic, run="single")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gais_pipe",
        "train",
        "-w",
        str(work),
        "--captions",
        str(captions),
        "--quiet",
        "--run-name",
        "ddp",
        *sum((["--set", o] for o in [*FAST, *deterministic]), []),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ddp = [json.loads(line) for line in (work / "runs/ddp/metrics.jsonl").read_text().splitlines()]
    for a, b in zip(single.history, ddp):
        # the drift compounds: 0.3% after one epoch, 2.8% after two with the tiny config of issue 9
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01 if a["epoch"] == 1 else 0.05)
        assert b["val_t2v_R@10"] == pytest.approx(a["val_t2v_R@10"], abs=5.0)


def test_lazy_features_from_the_shards_train_the_same_model(synthetic, trained):
    work, captions = synthetic
    lazy = train(work, captions, "train.lazy_features=true", run="lazy")
    assert [h["train_loss"] for h in lazy.history] == [h["train_loss"] for h in trained.history]
    assert lazy.best_val_r1 == trained.best_val_r1


def test_text_features_are_cached_and_reused(synthetic, monkeypatch):
    from gais_pipe.retrieval.text_features import TextEncoder

    work, _ = synthetic
    encoder = TextEncoder(Workdir(work), torch.device("cpu"))
    first = encoder(["a brand new caption", "another new one"])
    calls = []
    real = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, batch=256: calls.append(list(texts)) or real(texts, batch))
    again = encoder(["another new one", "a brand new caption", "a third"])
    assert calls == [["a third"]]  # only the caption not seen before is encoded
    np.testing.assert_array_equal(again[:2], first[[1, 0]])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A small make-synthetic collection through the real extract (tiny config), trained with the
    default settings: no --set at all, as a new user runs it."""
    from conftest import extract

    from gais_pipe.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("media")
    made = make_synthetic(root / "data", 96, seed=21)
    extract(root / "data/videos", root / "work")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the heads' tensors are tiny: more threads only spin on a shared 2-core runner
    try:
        result = run_train(
            root / "work",
            Path(made["captions_file"]),
            load_config("tiny"),
            run_name="defaults",
            console=Console(quiet=True),
            show_progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return root, result


@pytest.mark.slow
def test_default_training_retrieves_generated_videos_and_listens_to_them(media):
    from gais_pipe.retrieval.data import caption_splits
    from gais_pipe.retrieval.text_features import TextEncoder

    root, result = media
    work = Workdir(root / "work")
    model, meta, _ = load_head(work, result.run_dir / "best.safetensors", torch.device("cpu"))
    assert meta["config"]["train"]["epochs"] == 0 and result.history[-1]["epoch"] > 20  # the auto schedule
    splits, _ = caption_splits(
        work, Path(meta["captions"]), None, meta["config"]["train"], TextEncoder(work, torch.device("cpu")), False
    )
    test = splits["test"]
    owners: dict[str, set] = {}
    for text, video in zip(test.texts, test.caption_video):
        owners.setdefault(text, set()).add(int(video))
    unique = np.array([len(owners[text]) == 1 for text in test.texts])
    scores = full_scores(model, test.text_features.float(), test.videos)
    recall = text_to_video(scores[unique], test.caption_video[unique])
    # 96 clips leave ~65 to train on for 36 looks x 6 sounds: most test combinations were never seen
    # together; at 420 clips the same defaults reach ~81 (see the report of issue 9). Chance is ~7.
    assert unique.sum() >= 20 and recall["R@1"] >= 40.0 and recall["R@5"] >= 85.0, recall
    # The heads listen: a test caption that names its clip's sound ranks the clip above every clip of the
    # collection (any split) that looks exactly the same and sounds different. Without sound these tie.
    facts = {f["video"]: f for f in json.loads((root / "data/videos.json").read_text())}
    every = [splits[name] for name in ("train", "val", "test")]
    ids = [video for split in every for video in split.video_ids]
    pooled = VideoBatch(
        *(torch.cat([getattr(split.videos, k) for split in every]) for k in ("frames", "audio", "mask"))
    )
    named = [j for j, v in enumerate(test.caption_video) if unique[j] and facts[test.video_ids[v]]["sound_named"]]
    against_all = full_scores(model, test.text_features[named].float(), pooled)
    look = {video: tuple(facts[video][k] for k in ("shape", "colour", "motion", "background")) for video in ids}
    column = {video: col for col, video in enumerate(ids)}
    wins = [
        against_all[row, column[own]] > against_all[row, column[other]]
        for row, own in enumerate(test.video_ids[test.caption_video[j]] for j in named)
        for other in ids
        if other != own and look[other] == look[own]
    ]
    assert len(wins) >= 10 and np.mean(wins) >= 0.8, (len(wins), np.mean(wins))
    # Claim 1's sharper test: one clip's gate opens more under a caption that names its sound than under the
    # same sentence without it, by issue 21's target of 0.3 at least (the match gate gave +0.60 here; the relevance
    # gate before it +0.04; the paper's linear text gate does the opposite: BENCHMARKS.md, "The study").
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from gate_auc import probe_pairs

    lines = [json.loads(line) for line in (root / "data/gate_probe.jsonl").read_text().splitlines()]
    probe = probe_pairs(model, test, TextEncoder(work, torch.device("cpu")), lines)
    assert probe["pairs"] >= 5 and probe["share_positive"] >= 0.8 and probe["mean_difference"] >= 0.3, probe


def test_scores_stay_fp32_under_bf16_autocast():
    """At a logit scale of 100, bf16 scores move in steps of 0.25-0.5: the products and the loss run in fp32."""
    from gais_pipe.train_stage import batch_loss

    cfg, model, texts, videos = _tiny_problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(texts, videos)
        loss, _ = batch_loss(model, texts, videos, cfg)
    assert out.full.dtype == out.stage1.dtype == loss.dtype == torch.float32
    exact = model(texts, videos).full
    torch.testing.assert_close(out.full, exact, atol=0.05, rtol=0)  # bf16 inside pooling, fp32 products


def test_the_semantic_variance_samples_each_videos_own_captions_afresh():
    """Issue 9, cause 8: the variance estimate drew a video's first 5 captions every time; it samples them."""
    from gais_pipe.retrieval.data import Split, variance_texts

    caption_video = np.repeat([0, 1], [8, 3])  # video 0 has 8 captions, video 1 has 3
    features = torch.arange(len(caption_video), dtype=torch.float32)[:, None].expand(-1, 4).clone()
    empty = VideoBatch(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 1, dtype=torch.bool))
    split = Split("train", ["a", "b"], empty, [str(i) for i in caption_video], features, caption_video)
    generator = np.random.default_rng(0)
    draws = []
    for _ in range(20):
        texts, groups = variance_texts(split, np.array([0, 9]), 5, generator)
        chosen = texts[:, 0].long().numpy()
        assert (caption_video[chosen] == np.array([0, 1])[groups.numpy()]).all()  # a video's own captions only
        assert list(np.bincount(groups.numpy())) == [5, 3]  # at most 5 each, all of a video with fewer
        draws.append(tuple(chosen[groups.numpy() == 0]))
    assert len(set(draws)) > 10  # not always the same five

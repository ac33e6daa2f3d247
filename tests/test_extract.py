"""The extract stage end to end on generated and real media: what is stored, and what survives."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import OPENCV_DATA, extract, features
from media import make_audio_only, make_video, silence, tone

from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.shards import read_attrs


def write_broken_inputs(folder: Path) -> dict[str, str]:
    """Bad files of every kind the issue names; returns id -> stage where each must fail."""
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    full = make_video(folder / "tmp_full.mp4", seconds=2.0)
    (folder / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    make_audio_only(folder / "sound only.mp4")
    mjpeg = make_video(folder / "tmp.avi", vcodec="mjpeg", acodec=None)
    (folder / "unknown codec.avi").write_bytes(mjpeg.read_bytes().replace(b"MJPG", b"QQQQ"))
    mjpeg.unlink()
    return {
        "zero.mp4": "probe",
        "notes.mp4": "probe",
        "truncated.mp4": "probe",
        "sound only.mp4": "probe",
        "unknown codec.avi": "probe",
    }


def write_good_inputs(folder: Path) -> dict[str, bool]:
    """Good files of every kind; returns id -> whether it has sound."""
    make_video(folder / "a.mp4", seconds=1.5)
    make_video(folder / "sub dir/ünïcode clip.mkv", seconds=1.0, acodec="pcm_s16le")
    make_video(folder / "b.avi", seconds=1.0, vcodec="mpeg4", acodec="libmp3lame", sample_rate=44100)
    make_video(folder / "c.webm", seconds=1.0, vcodec="libvpx", acodec="libopus", sample_rate=48000)
    make_video(folder / "silent.mp4", seconds=1.0, acodec=None)
    make_video(folder / "tiny.mp4", frames=2, fps=25, size=(34, 18))
    make_video(folder / "odd.mkv", seconds=0.5, fps=7, size=(97, 41), acodec=None, pix_fmt="yuv444p")
    return {
        "a.mp4": True,
        "sub dir/ünïcode clip.mkv": True,
        "b.avi": True,
        "c.webm": True,
        "silent.mp4": False,
        "tiny.mp4": True,
        "odd.mkv": False,
    }


def test_mixed_collection_keeps_every_good_video_and_names_every_bad_one(tmp_path):
    videos = tmp_path / "videos"
    good = write_good_inputs(videos)
    bad = write_broken_inputs(videos)
    (videos / "readme.txt").write_text("not a video extension: ignored")
    summary = extract(videos, tmp_path / "work")
    assert (summary.found, summary.extracted, summary.failed) == (len(good) + len(bad), len(good), len(bad))

    stored = features(tmp_path / "work")
    assert sorted(stored["video_id"]) == sorted(good)
    # tiny: 128-d frames; audio 64 mel bands pooled as mean and std per segment
    assert stored["frame_features"].shape == (len(good), 12, 128) and stored["frame_features"].dtype == np.float16
    assert stored["audio_features"].shape == (len(good), 12, 128) and stored["audio_features"].dtype == np.float16
    assert np.isfinite(stored["frame_features"].astype(np.float32)).all()
    for i, video_id in enumerate(stored["video_id"]):
        assert stored["has_audio_stream"][i] == good[video_id]
        assert stored["audio_mask"][i].all() == good[video_id], video_id
        if not good[video_id]:
            assert not stored["audio_features"][i].any()  # no sound is masked, never zeros posing as sound
        assert np.all(np.diff(stored["frame_times"][i]) >= 0)

    failures = {f["video"]: f for f in Workdir(tmp_path / "work").failures()}
    assert {k: f["stage"] for k, f in failures.items()} == bad
    assert all(f["reason"] and "\n" not in f["reason"] for f in failures.values())
    assert "no video stream" in failures["sound only.mp4"]["reason"]
    assert "no decoder" in failures["unknown codec.avi"]["reason"]


def test_a_tone_that_starts_halfway_changes_only_the_second_half(tmp_path):
    # 4 s, T=12: segments of 1/3 s; the tone starts just after the 6th segment ends (2.0 s).
    make_video(tmp_path / "quiet/clip.mkv", seconds=4.0, acodec="pcm_s16le", audio=silence)
    make_video(tmp_path / "tone/clip.mkv", seconds=4.0, acodec="pcm_s16le", audio=tone(1000.0, start=2.02))
    extract(tmp_path / "quiet", tmp_path / "wq")
    extract(tmp_path / "tone", tmp_path / "wt")
    quiet = features(tmp_path / "wq")["audio_features"][0].astype(np.float32)
    loud = features(tmp_path / "wt")["audio_features"][0].astype(np.float32)
    change = np.abs(loud - quiet).max(axis=1)
    assert np.all(change[:6] < 1e-3), change
    assert np.all(change[6:] > 1.0), change


def test_audio_that_ends_early_masks_the_segments_without_sound(tmp_path):
    make_video(tmp_path / "v/clip.mkv", seconds=3.0, acodec="pcm_s16le", audio_seconds=1.5)
    extract(tmp_path / "v", tmp_path / "w")
    assert features(tmp_path / "w")["audio_mask"][0].tolist() == [True] * 6 + [False] * 6


def test_rerun_skips_done_videos_and_extracts_new_or_changed_ones(tmp_path):
    videos = tmp_path / "videos"
    for name in ("a", "b", "c"):
        make_video(videos / f"{name}.mp4", seconds=0.5)
    first = extract(videos, tmp_path / "work")
    assert (first.extracted, first.skipped) == (3, 0)
    again = extract(videos, tmp_path / "work")
    assert (again.extracted, again.skipped) == (0, 3)

    make_video(videos / "d.mp4", seconds=0.5)
    make_video(videos / "a.mp4", seconds=1.0, frame_value=lambda k: 200)  # changed: new size and mtime
    os.utime(videos / "a.mp4", (time.time() + 10, time.time() + 10))
    third = extract(videos, tmp_path / "work")
    assert (third.extracted, third.skipped) == (2, 2)
    stored = features(tmp_path / "work")
    assert stored["video_id"].tolist() == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert stored["duration"][0] == pytest.approx(1.0, abs=0.05)  # the newest row of a.mp4 wins


def test_a_different_config_in_the_same_workdir_is_refused_by_name(tmp_path):
    make_video(tmp_path / "v/a.mp4", seconds=0.5)
    extract(tmp_path / "v", tmp_path / "w")
    with pytest.raises(WorkdirError, match="features.frames"):
        extract(tmp_path / "v", tmp_path / "w", "features.frames=8")
    with pytest.raises(WorkdirError, match="clip_sha256"):
        extract(tmp_path / "v", tmp_path / "w", "features.clip.seed=1")
    # Runtime settings are not part of the features: changing them is fine.
    assert extract(tmp_path / "v", tmp_path / "w", "runtime.batch_videos=1").skipped == 1


def test_two_runs_on_one_workdir_are_refused_by_a_lock(tmp_path):
    make_video(tmp_path / "v/a.mp4", seconds=0.5)
    work = Workdir(tmp_path / "w")
    with work.worker_lock(0, 1):
        with pytest.raises(WorkdirError, match="another extract run"):
            extract(tmp_path / "v", tmp_path / "w")
    with work.worker_lock(1, 2):  # a sharded run of 2 workers holds slot 1
        with pytest.raises(WorkdirError, match="splits it into 2"):
            extract(tmp_path / "v", tmp_path / "w")
        assert extract(tmp_path / "v", tmp_path / "w", num_shards=2, shard_index=0).found <= 1
    extract(tmp_path / "v", tmp_path / "w")  # once the locks are released, runs go ahead
    assert features(tmp_path / "w")["video_id"].tolist() == ["a.mp4"]


def test_two_sharded_workers_equal_one_run(tmp_path):
    videos = tmp_path / "videos"
    for i in range(6):
        make_video(videos / f"v{i}.mp4", seconds=0.5, frame_value=lambda k, i=i: 20 * i + k)
    extract(videos, tmp_path / "single")
    parts = [extract(videos, tmp_path / "sharded", num_shards=2, shard_index=i) for i in range(2)]
    assert sum(p.extracted for p in parts) == 6 and all(p.extracted for p in parts)
    single, sharded = features(tmp_path / "single"), features(tmp_path / "sharded")
    assert single["video_id"].tolist() == sharded["video_id"].tolist()
    for name in ("frame_features", "audio_features", "audio_mask", "frame_times"):
        np.testing.assert_array_equal(single[name], sharded[name])
    assert {read_attrs(p)["worker"] for p in Workdir(tmp_path / "sharded").shards()} == {0, 1}


def test_background_decode_workers_give_the_same_features(tmp_path):
    videos = tmp_path / "videos"
    for i in range(5):
        make_video(videos / f"v{i}.mp4", seconds=0.5, frame_value=lambda k, i=i: 30 * i)
    (videos / "broken.mp4").write_text("nope")
    extract(videos, tmp_path / "inline")
    summary = extract(videos, tmp_path / "workers", "runtime.decode_workers=2", "runtime.batch_videos=2")
    assert (summary.extracted, summary.failed) == (5, 1)
    a, b = features(tmp_path / "inline"), features(tmp_path / "workers")
    np.testing.assert_array_equal(a["frame_features"], b["frame_features"])


def test_shards_are_small_self_describing_and_listed_in_the_manifest(tmp_path):
    for i in range(5):
        make_video(tmp_path / f"v/{i}.mp4", seconds=0.5)
    extract(tmp_path / "v", tmp_path / "w", "runtime.shard_videos=2")
    work = Workdir(tmp_path / "w")
    shards = work.shards()
    assert [read_attrs(p)["videos"] for p in shards] == [2, 2, 1]
    assert json.loads((tmp_path / "w/manifest.json").read_text())["shards"][0]["file"] == shards[0].name
    attrs = read_attrs(shards[0])
    identity = json.loads(attrs["identity"])
    assert identity["features"]["frames"] == 12 and attrs["feature_hash"] == work.identity()["feature_hash"]
    assert json.loads(attrs["clip"])["sha256"] == work.identity()["clip"]["sha256"]
    assert not list((tmp_path / "w/features").glob("*.tmp"))


def test_a_run_killed_mid_shard_resumes_without_redoing_finished_work(tmp_path):
    videos = tmp_path / "videos"
    for i in range(8):
        make_video(videos / f"v{i}.mp4", seconds=0.5)
    work = tmp_path / "work"
    command = [
        sys.executable,
        "-m",
        "gais_pipe",
        "extract",
        str(videos),
        "-w",
        str(work),
        "--quiet",
        "--set",
        "runtime.shard_videos=2",
        "--set",
        "runtime.batch_videos=1",
        "--set",
        "runtime.decode_workers=0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((work / "features").glob("shard-*.h5"))) < 1:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list((work / "features").glob("shard-*.h5")))
    assert 1 <= written < 4
    for shard in (work / "features").glob("shard-*.h5"):
        with h5py.File(shard) as handle:  # every shard that exists is whole
            assert handle["frame_features"].shape[0] == handle.attrs["videos"] == 2
    resumed = extract(videos, work, "runtime.shard_videos=2")
    assert resumed.skipped == 2 * written and resumed.extracted == 8 - 2 * written
    assert len(features(work)["video_id"]) == 8
    assert not list((work / "features").glob(".*.tmp"))


def test_real_media_bigbuckbunny_and_opencv_clips(tmp_path, bigbuckbunny):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(bigbuckbunny, videos / "bigbuckbunny.mp4")
    expected = {"bigbuckbunny.mp4": True}
    for name, sound in (("Megamind.avi", True), ("vtest.avi", False)):
        if (OPENCV_DATA / name).exists():
            shutil.copy(OPENCV_DATA / name, videos / name)
            expected[name] = sound
    summary = extract(videos, tmp_path / "work")
    assert summary.failed == 0 and summary.extracted == len(expected)
    stored = features(tmp_path / "work")
    for i, video_id in enumerate(stored["video_id"]):
        assert stored["audio_mask"][i].all() == expected[video_id], video_id
    bunny = stored["video_id"].tolist().index("bigbuckbunny.mp4")
    assert stored["duration"][bunny] == pytest.approx(5.28, abs=0.05)
    assert stored["fps"][bunny] == pytest.approx(25.0)
    if "Megamind.avi" in expected:  # one bad AC3 packet: frames kept, the rest of the sound kept
        megamind = stored["video_id"].tolist().index("Megamind.avi")
        assert stored["audio_dropped_packets"][megamind] >= 1
        assert summary.warned >= 1


def test_list_file_input(tmp_path):
    make_video(tmp_path / "v/a.mp4", seconds=0.5)
    make_video(tmp_path / "elsewhere/b.mp4", seconds=0.5)
    listing = tmp_path / "v/list.txt"
    listing.write_text(f"a.mp4\n# a comment\n{tmp_path / 'elsewhere/b.mp4'}\nmissing.mp4\n")
    summary = extract(listing, tmp_path / "w")
    assert (summary.extracted, summary.failed) == (2, 1)
    assert sorted(features(tmp_path / "w")["video_id"]) == sorted(["a.mp4", str(tmp_path / "elsewhere/b.mp4")])
    assert Workdir(tmp_path / "w").failures()[0]["stage"] == "discover"


def _probe_that_crashes_on(name: str):
    from gais_pipe.extract import probe as real

    def probe(path):
        if name in path.name:
            os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug in C does to its process
        return real.probe(path)

    return probe


@pytest.mark.slow
def test_a_video_that_crashes_the_decoder_costs_only_itself(tmp_path, monkeypatch):
    """A segfault in a decode worker loses that video only, after one retry in a fresh process, and the
    account says so; the other videos decode in the pool as usual."""
    from crashing import CrashOnSound

    from gais_pipe import extract_stage

    videos = tmp_path / "videos"
    for i in range(6):
        make_video(videos / f"v{i}.mp4", seconds=0.5, acodec=None)
    make_video(videos / "v2 crash.mp4", seconds=0.5)  # the only one with sound: CrashOnSound kills its worker
    real_spec = extract_stage.decode_spec
    monkeypatch.setattr(
        extract_stage,
        "decode_spec",
        lambda config, workers: replace(real_spec(config, workers), audio_frontend=CrashOnSound()),
    )
    summary = extract(videos, tmp_path / "work", "runtime.decode_workers=2", "runtime.prefetch=2")
    assert (summary.extracted, summary.failed) == (6, 1)
    failure = Workdir(tmp_path / "work").failures()[0]
    assert failure["video"] == "v2 crash.mp4" and "crashed, twice" in failure["reason"]
    assert "SIGSEGV" in failure["reason"]
    assert summary.account.as_dict()["redecoded_alone"] == 1


def test_torchrun_environment_picks_the_workers_share(tmp_path, monkeypatch):
    from gais_pipe.distributed import owner

    videos = tmp_path / "videos"
    names = [f"clip{i}.mp4" for i in range(6)]
    for name in names:
        make_video(videos / name, seconds=0.3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    summary = extract(videos, tmp_path / "work")
    assert sorted(features(tmp_path / "work")["video_id"]) == sorted(n for n in names if owner(n, 2) == 1)
    assert summary.found == sum(owner(n, 2) == 1 for n in names)


def test_a_corrupt_workdir_file_is_one_line_naming_it(tmp_path):
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    work = Workdir(tmp_path / "work")
    work.create()
    work.identity_path.write_text('{"feature_hash": "abc",\n "identity": ')
    result = CliRunner().invoke(app, ["info", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        == f"error: {work.identity_path} line 2 column 14: not valid JSON (Expecting value); delete or restore it"
    )


# --- the GPU path, tested on the CPU: errors of the device, precision, decode workers, the writer thread ---


def _mapper_that(monkeypatch, fails):
    """Make FeatureMapper raise `fails(batch sizes so far)` (an exception, or None to encode as usual)."""
    from gais_pipe.extract.mapper import FeatureMapper

    real, sizes = FeatureMapper.__call__, []

    def call(self, batch):
        sizes.append(len(batch))
        error = fails(sizes)
        if error is not None:
            raise error
        return real(self, batch)

    monkeypatch.setattr(FeatureMapper, "__call__", call)
    return sizes


def _five_videos(folder: Path) -> Path:
    for i in range(5):
        make_video(folder / f"v{i}.mp4", seconds=0.5, frame_value=lambda k, i=i: 40 * i + k)
    return folder


def test_out_of_memory_halves_the_batch_and_loses_no_video(tmp_path, monkeypatch):
    import torch

    videos = _five_videos(tmp_path / "videos")
    extract(videos, tmp_path / "plain")
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    sizes = _mapper_that(monkeypatch, lambda sizes: oom if sizes[-1] > 1 else None)
    summary = extract(videos, tmp_path / "work")
    assert (summary.extracted, summary.failed) == (5, 0)
    assert sizes == [1, 2, 1, 1, 1, 1]  # batches ramp up 1 -> 2, which runs out: 1 from then on
    plain, halved = features(tmp_path / "plain"), features(tmp_path / "work")
    np.testing.assert_array_equal(plain["frame_features"], halved["frame_features"])
    np.testing.assert_array_equal(plain["audio_features"], halved["audio_features"])


def test_out_of_memory_with_one_video_stops_the_run(tmp_path, monkeypatch):
    import torch

    from gais_pipe.extract.guard import DeviceFailure

    _mapper_that(monkeypatch, lambda sizes: torch.cuda.OutOfMemoryError("CUDA out of memory."))
    with pytest.raises(DeviceFailure, match="single video"):
        extract(_five_videos(tmp_path / "videos"), tmp_path / "work")
    assert Workdir(tmp_path / "work").failures() == []


def test_a_cuda_error_stops_the_run_in_one_line_keeping_what_was_encoded(tmp_path, monkeypatch):
    """A sticky CUDA error fails every later call: one clear error, not every remaining video marked failed."""
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    videos = _five_videos(tmp_path / "videos")
    error = RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")
    _mapper_that(monkeypatch, lambda sizes: error if len(sizes) > 1 else None)
    settings = ["--set", "runtime.decode_workers=0", "--set", "runtime.batch_videos=2", "--quiet"]
    result = CliRunner().invoke(app, ["extract", str(videos), "-w", str(tmp_path / "work"), *settings])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "illegal memory access" in lines[0] and "run the same command again" in lines[0]
    work = Workdir(tmp_path / "work")
    assert work.failures() == [] and len(features(tmp_path / "work")["video_id"]) == 1  # the first batch is kept
    monkeypatch.undo()
    resumed = extract(videos, tmp_path / "work")
    assert (resumed.skipped, resumed.extracted) == (1, 4)


def test_the_precision_is_part_of_the_feature_identity(tmp_path, monkeypatch):
    make_video(tmp_path / "v/a.mp4", seconds=0.5)
    extract(tmp_path / "v", tmp_path / "w")
    assert Workdir(tmp_path / "w").identity()["identity"]["precision"] == "fp32"  # the CPU computes in fp32
    # A workdir made on the CPU is not continued at fp16 on a GPU (simulated: the CPU has no fp16 autocast).
    monkeypatch.setattr("gais_pipe.extract_stage.effective_precision", lambda device, precision: "fp16")
    with pytest.raises(WorkdirError, match="differing: precision"):
        extract(tmp_path / "v", tmp_path / "w")


def test_an_image_tower_in_half_precision_gives_the_fp32_features(tmp_path):
    """What CUDA fp16 does (weights in the autocast dtype, autocast), run with bf16 on the CPU."""
    import torch

    from gais_pipe.extract.clip_model import image_tower_in, load_clip
    from gais_pipe.extract.mapper import FeatureMapper

    clip = load_clip({"model": "gais-tiny-vit", "pretrained": "random"}, tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (6, clip.image_size, clip.image_size, 3), dtype=np.uint8)
    full = FeatureMapper(clip, None, torch.device("cpu"), None, 0.5).encode_images(pixels).astype(np.float32)
    image_tower_in(clip, torch.bfloat16)
    assert next(clip.model.visual.parameters()).dtype == torch.bfloat16
    half = FeatureMapper(clip, None, torch.device("cpu"), torch.bfloat16, 0.5).encode_images(pixels)
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half.astype(np.float32), axis=1)
    assert cosine.min() > 0.99


@pytest.mark.slow
def test_pool_workers_decode_the_same_as_this_process(tmp_path):
    from gais_pipe.extract.audio_encoders import LogMelFrontend
    from gais_pipe.extract.decode_pool import DecodePool
    from gais_pipe.extract.discover import discover
    from gais_pipe.extract.reader import DecodeSpec

    for i in range(5):
        make_video(tmp_path / f"v/{i}.mp4", seconds=0.5 + 0.2 * i, frame_value=lambda k, i=i: 50 * i + k)
    refs, _ = discover(tmp_path / "v")
    spec = DecodeSpec(4, 32, 16000, "auto", LogMelFrontend(16000, 64, 400, 160), threads=1)
    inline = {item.ref.id: item for item in DecodePool(refs, spec, workers=0)}
    with DecodePool(refs, spec, workers=2, queued_per_worker=1) as pool:
        served = {item.ref.id: item for item in pool}
        assert pool.counts.received == 5 and pool.counts.transfer_bytes > 0
    assert served.keys() == inline.keys() == {r.id for r in refs}
    for name, item in inline.items():
        np.testing.assert_array_equal(item.frames.pixels, served[name].frames.pixels)
        np.testing.assert_array_equal(item.audio_input, served[name].audio_input)
        assert set(served[name].seconds) == {"probe", "frames", "audio", "frontend"}


@pytest.mark.slow
def test_a_hanging_decoder_is_stopped_at_the_timeout_and_the_rest_go_on(tmp_path):
    from hanging import HangOnSound

    from gais_pipe.extract.decode_pool import DecodePool
    from gais_pipe.extract.discover import discover
    from gais_pipe.extract.reader import DecodeSpec

    for i in range(3):
        make_video(tmp_path / f"v/{i}.mp4", seconds=0.5, acodec=None)
    make_video(tmp_path / "v/stuck.mp4", seconds=0.5)
    refs, _ = discover(tmp_path / "v")
    spec = DecodeSpec(4, 32, 16000, "auto", HangOnSound(), threads=1)
    start = time.perf_counter()
    with DecodePool(refs, spec, workers=2, timeout=2.0) as pool:
        items = list(pool)
    assert time.perf_counter() - start < 30
    problems = [item for item in items if not hasattr(item, "ref")]
    assert [(p.id, "runtime.decode_timeout" in p.reason) for p in problems] == [("stuck.mp4", True)]
    assert len(items) == 4


def test_decoders_and_encoders_share_this_process_cores(monkeypatch):
    from gais_pipe import extract_stage

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    runtime = {"decode_workers": 16, "prefetch": 0, "batch_videos": 16}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 ranks on this node: 8 cores each
    assert extract_stage.available_cores() == 8
    assert extract_stage.decode_parallelism(runtime)[0] == 8
    assert extract_stage.decoder_threads(4) == 2 and extract_stage.decoder_threads(0) == 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert extract_stage.decode_parallelism(runtime)[0] == 16 and extract_stage.decoder_threads(16) == 2


def test_auto_decode_workers_feed_a_gpu_with_all_cores_but_two_and_share_a_cpu(monkeypatch):
    """Extraction on a GPU box is decode-bound: the default must use its cores, not a fixed handful."""
    from gais_pipe import extract_stage
    from gais_pipe.config import load_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    for name in ("tiny", "paper"):
        runtime = load_config(name)["runtime"]
        assert runtime["decode_workers"] == "auto"
        assert extract_stage.decode_workers(runtime, on_gpu=True) == 14
        assert extract_stage.decode_workers(runtime, on_gpu=False) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks with a GPU each: 4 cores, 2 decoders each
    assert extract_stage.decode_workers(runtime, on_gpu=True) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert extract_stage.decode_workers(runtime, on_gpu=True) == 1  # never none
    assert extract_stage.decode_workers(runtime, on_gpu=False) == 1  # this 2-core machine: as before
    assert extract_stage.decode_workers(dict(runtime, decode_workers=0)) == 0  # 0 still decodes inline
    assert extract_stage.decode_workers(dict(runtime, decode_workers=6)) == 2  # at most the cores


def test_the_writer_thread_keeps_order_and_reports_its_errors(tmp_path):
    from gais_pipe.extract.shards import BackgroundWriter

    class Collect:
        def __init__(self):
            self.rows, self.flushed = [], False

        def add(self, rows):
            if rows == ["bad"]:
                raise OSError("No space left on device")
            self.rows.extend(rows)

        def flush(self):
            self.flushed = True

    inner = Collect()
    writer = BackgroundWriter(inner)
    for i in range(50):
        writer.add([i])
    writer.close()
    assert inner.rows == list(range(50)) and inner.flushed
    writer = BackgroundWriter(Collect())
    writer.add(["bad"])
    with pytest.raises(OSError, match="No space"):
        for i in range(50):  # raised in a later add, or at the latest in close
            writer.add([i])
        writer.close()


def test_the_account_says_where_the_time_went_and_batches_ramp_up(tmp_path):
    videos = _five_videos(tmp_path / "videos")
    make_video(videos / "v5.mp4", seconds=0.5, acodec=None)
    summary = extract(videos, tmp_path / "work", "runtime.batch_videos=4")
    account = summary.account.as_dict()
    assert [n for _, n in account["batches"]] == [1, 2, 3]  # 1, 2, then up to 4: the 3 left
    assert account["decoded"] == summary.extracted == 6
    assert all(account["decode_s"][step] > 0 for step in ("probe", "frames", "audio"))
    assert account["encode_s"]["image"] > 0 and account["startup_s"] > 0 and account["redecoded_alone"] == 0
    assert account["steady_videos"] == 5 and account["steady_videos_per_s"] > 0


def test_extract_prints_the_account_and_json(tmp_path):
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    videos = _five_videos(tmp_path / "videos")
    settings = ["--set", "runtime.decode_workers=0", "--quiet", "--json"]
    result = CliRunner().invoke(app, ["extract", str(videos), "-w", str(tmp_path / "work"), *settings])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["extracted"] == 5 and answer["account"]["decoded"] == 5
    assert set(answer["account"]["decode_s"]) == {"probe", "frames", "audio", "frontend"}
    assert "where the time went" in result.stderr and "steady state" in result.stderr


def test_pooling_on_the_device_equals_pooling_on_the_host():
    import torch

    from gais_pipe.extract.audio_encoders import pool_on_device, pool_selected, segment_frames
    from gais_pipe.extract.sampling import segment_bounds

    features = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    times = (np.arange(300) + 0.5) / 50
    selection = segment_frames(times, [(0.0, 2.5), (3.5, 6.0)], segment_bounds(6.0, 12), 0.5)
    assert any(s is None for s in selection) and any(s is not None for s in selection)  # a gap, and sound
    for pool in ("mean", "mean+std"):
        host = pool_selected(features, selection, pool)
        device = pool_on_device(torch.from_numpy(features), selection, pool).numpy()
        np.testing.assert_allclose(device, host, atol=1e-5)

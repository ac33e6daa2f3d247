"""The extract stage end to end on generated and real media: what is stored, and what survives."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import OPENCV_DATA, extract, features
from media import make_audio_only, make_video, silence, tone

from gais_pipe.config import load_config
from gais_pipe.extract.shards import read_attrs
from gais_pipe.extract.workdir import Workdir, WorkdirError
from gais_pipe.extract_stage import feature_record


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


def test_a_mean_audio_pool_leaves_the_feature_hash_of_older_workdirs_as_it_was():
    """features.audio.pool came after workdirs existed: at "mean" it must not change their identity."""
    clip = SimpleNamespace(identity={"sha256": "c"}, embed_dim=512, image_size=224)
    audio = SimpleNamespace(identity={"sha256": "a"}, dim=512)
    paper = load_config("paper")
    before = copy.deepcopy(paper)
    del before["features"]["audio"]["pool"]  # a config from before the key existed
    assert feature_record(paper, clip, audio)["feature_hash"] == feature_record(before, clip, audio)["feature_hash"]
    paper["features"]["audio"]["pool"] = "mean+std"
    assert feature_record(paper, clip, audio)["feature_hash"] != feature_record(before, clip, audio)["feature_hash"]


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


def test_a_video_that_crashes_the_decoder_costs_only_itself(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    for i in range(6):
        make_video(videos / f"v{i}.mp4", seconds=0.5)
    make_video(videos / "v2 crash.mp4", seconds=0.5)
    monkeypatch.setattr("gais_pipe.extract.reader.probe", _probe_that_crashes_on("crash"))  # workers are forked
    summary = extract(videos, tmp_path / "work", "runtime.decode_workers=2", "runtime.prefetch=2")
    assert (summary.extracted, summary.failed) == (6, 1)
    failure = Workdir(tmp_path / "work").failures()[0]
    assert failure["video"] == "v2 crash.mp4" and "crashed" in failure["reason"]


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
